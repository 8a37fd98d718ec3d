"""On the gateway: measure an installed bundle under the real runtime and recommend its budget.

With ``--port`` the runtime reads the attached device; without one, the device simulator
streams real CWRU recordings into a pty at real rate.  Gateway side: never imports torch.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from edge.errors import DrsnEdgeError
from edge.runtime.loop import Runtime, RuntimeSettings


def measure_bundle(bundle: str | Path, seconds: float = 60.0, port: str | None = None, data: str | Path | None = None,
                   run_dir: str | Path | None = None, rate: float = 1.0, threads: int = 1,
                   budget_ms: float = 1000.0) -> dict:
    """The runtime's summary after ``seconds`` on ``bundle``: latency percentiles, stages, counters.

    The budget is set wide (default 1 s) so that no window is cut short by the fail-safe:
    what is measured is how long decisions take, not whether they fit today's budget.
    """
    with tempfile.TemporaryDirectory(prefix="drsn-calibrate-") as tmp:
        settings = RuntimeSettings(port=port or "", budget_ms=budget_ms, log_path=str(Path(tmp) / "decisions.db"),
                                   http=None, threads=threads)
        if port:
            runtime = Runtime(str(bundle), settings)
            try:
                runtime.start()
                return runtime.run(seconds)
            finally:
                runtime.close()
        from edge.data.catalog import default_cwru_dir
        from edge.runtime.simulated import run_with_simulator
        from firmware_bridge.sources import cwru_source, held_out_spans

        data = Path(data) if data else default_cwru_dir()
        if not data.is_dir():
            raise DrsnEdgeError(f"no device given (--port) and no CWRU data at {data} for the simulator (--data)")
        spans = held_out_spans(Path(run_dir) / "split.json") if run_dir else None
        source = cwru_source(data, loads=(0,), spans=spans)
        return run_with_simulator(str(bundle), settings, source, seconds, rate).summary


def recommend(summary: dict, margin: float = 0.2) -> dict:
    """A budget that leaves ``margin`` above the measured p99.9, and the fail-safe to pair with it."""
    lat = summary["latency"]
    if not lat.get("n"):
        raise DrsnEdgeError("no decision was made during the measurement: is the device streaming?")
    tail = max(lat["p99_9_ms"], lat["p99_ms"])
    budget = math.ceil(tail * (1.0 + margin) * 10.0) / 10.0
    return {
        "budget_ms": budget,
        "on_miss": "reject",
        "why": (f"p99.9 {lat['p99_9_ms']:.2f} ms (max {lat['max_ms']:.2f} ms over {lat['n']} decisions) plus a "
                f"{100 * margin:.0f} % margin, rounded up to 0.1 ms; on a miss, reject: a window the gateway could "
                "not decide in time never passes a defect unseen, and every fail-safe is counted and logged"),
        "max_in_measurement_fits": lat["max_ms"] <= budget,
    }
