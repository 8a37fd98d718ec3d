"""On the gateway: measure an installed bundle under the real runtime and recommend its budget.

With ``--port`` the runtime reads the attached device; without one, the device simulator
streams real CWRU recordings into a pty at real rate.  Gateway side: never imports torch.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

from edge.bundle import Bundle
from edge.errors import DrsnEdgeError
from edge.runtime.loop import Runtime, RuntimeSettings


def measure_bundle(bundle: str | Path, seconds: float = 60.0, port: str | None = None, data: str | Path | None = None,
                   run_dir: str | Path | None = None, rate: float = 1.0, threads: int = 1,
                   budget_ms: float = 1000.0, announce: Callable[[str], None] | None = None) -> dict:
    """The runtime's summary after ``seconds`` on ``bundle``: latency percentiles, stages, counters.

    The budget is set wide (default 1 s) so that no window is cut short by the fail-safe:
    what is measured is how long decisions take, not whether they fit today's budget.
    ``announce(port)`` is called once the bundle, the run and the data are found, before
    anything is measured.
    """
    with tempfile.TemporaryDirectory(prefix="drsn-calibrate-") as tmp:
        settings = RuntimeSettings(port=port or "", budget_ms=budget_ms, log_path=str(Path(tmp) / "decisions.db"),
                                   http=None, threads=threads)
        if port:
            runtime = Runtime(str(bundle), settings)
            try:
                if announce:
                    announce(port)
                runtime.start()
                return runtime.run(seconds)
            finally:
                runtime.close()
        from dataclasses import replace

        from edge.bundle import open_bundle
        from edge.runtime.simulated import run_with_simulator
        from firmware_bridge.sources import ACTUATOR_LINES, LINE_RATE_HZ

        opened = open_bundle(str(bundle))
        image = opened.kind == "linescan"
        source = _simulator_source(bundle, opened, Path(data) if data else None, run_dir)
        if image:  # the simulated actuator beyond the wide budget's travel: no REJECT may come late for it
            settings = replace(settings, distance=ACTUATOR_LINES + math.ceil(budget_ms / 1e3 * LINE_RATE_HZ))
        session = run_with_simulator(opened, settings, source, seconds, rate,
                                     announce and (lambda device_port, _runtime: announce(device_port)))
        if session.interrupted:  # a cut-short measurement recommends nothing
            raise KeyboardInterrupt
        return session.summary


def _simulator_source(name: str | Path, bundle: Bundle, data: Path | None, run_dir: str | Path | None):
    """Real recordings for the simulator: for an image bundle, a belt of the run's test images at
    the model's size when the run is known, else of the X-ray castings test patches; for a
    vibration bundle, CWRU (the run's held-out segments when the run is known).  A run of the
    other kind than the bundle is refused: what it holds out is not what the bundle reads."""
    from edge.data.catalog import default_data_root
    from edge.run_files import read_run_files
    from edge.runtime.simulated import check_run_fits_bundle, held_out_belt, held_out_records
    from firmware_bridge.sources import belt_source, cwru_source

    root = data or default_data_root()
    image = bundle.kind == "linescan"
    run = read_run_files(run_dir) if run_dir else None
    if run:
        check_run_fits_bundle(name, bundle, run_dir, run)
    if image and run:
        return held_out_belt(run, 200, data)
    if image:
        folder = next((f for f in (root, root / "xray", root.parent) if (f / "castings").is_dir()), None)
        if folder is None:
            raise DrsnEdgeError(f"no device given (--port) and no X-ray patches under {root} for the simulator (--data)")
        return belt_source(folder, "xray", "castings", "test", bands=200)
    folder = root if any(root.glob("*.mat")) else root / "cwru"
    if run:
        return held_out_records(run, folder if data else None)   # default: where the run trained
    if not folder.is_dir():
        raise DrsnEdgeError(f"no device given (--port) and no CWRU data at {folder} for the simulator (--data)")
    return cwru_source(folder, loads=(0,))


#: Decisions a measurement needs before its p99.9 rests on ten decisions beyond it rather than on one or two.
TAIL_DECISIONS = 10_000


def recommend(summary: dict, margin: float = 0.2) -> dict:
    """A budget that leaves ``margin`` above the measured p99.9, and the fail-safe to pair with it; with a
    ``caution`` when the measurement was too short for its p99.9 to be more than its slowest few decisions."""
    lat = summary["latency"]
    if not lat.get("n"):
        raise DrsnEdgeError("no decision was made during the measurement: is the device streaming?")
    tail = max(lat["p99_9_ms"], lat["p99_ms"])
    budget = math.ceil(tail * (1.0 + margin) * 10.0) / 10.0
    caution = None
    if lat["n"] < TAIL_DECISIONS:
        per_second = lat["n"] / summary["seconds"] if summary.get("seconds") else None
        longer = (f" (--seconds {math.ceil(TAIL_DECISIONS / per_second / 60.0) * 60} at this stream's "
                  f"{per_second:.0f} decisions a second)" if per_second else "")
        caution = (f"the p99.9 of {lat['n']} decisions is their slowest {max(1, round(lat['n'] / 1000))}: measure "
                   f"{TAIL_DECISIONS:,} decisions or more{longer}, while the gateway does its usual other work, "
                   "before trusting this budget on the line")
    return {
        "budget_ms": budget,
        "on_miss": "reject",
        "why": (f"p99.9 {lat['p99_9_ms']:.2f} ms (max {lat['max_ms']:.2f} ms over {lat['n']} decisions) plus a "
                f"{100 * margin:.0f} % margin, rounded up to 0.1 ms; on a miss, reject: a window the gateway could "
                "not decide in time never passes a defect unseen, and every fail-safe is counted and logged"),
        "max_in_measurement_fits": lat["max_ms"] <= budget,
        "caution": caution,
    }
