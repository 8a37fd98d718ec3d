"""Shared fixtures: the real CWRU files (never copies of them) and tiny training settings."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cwru_dir() -> Path:
    if os.environ.get("DRSN_EDGE_DATA"):
        return Path(os.environ["DRSN_EDGE_DATA"]) / "cwru"
    return ROOT.parent / "shared" / "data" / "cwru"


@pytest.fixture(scope="session")
def cwru_dir() -> Path:
    path = _cwru_dir()
    if not (path / "105.mat").is_file():
        pytest.skip(f"CWRU data not found at {path}; set DRSN_EDGE_DATA to the data root")
    return path


@pytest.fixture(scope="session")
def cwru_load0(cwru_dir):
    """Load-0 records (10 classes), read and resampled once for the whole session."""
    from edge.data.cwru import load_cwru

    return load_cwru(cwru_dir, loads=(0,))


def tiny_settings(seed: int = 0):
    from edge.train.trainer import TrainSettings

    # Plain steps (sam=0): the tiny fixtures serve the runtime, build and calibration tests, whose thresholds
    # were set on these models; SAM, the vibration default, is tested on its own and runs in the main job.
    return TrainSettings(epochs=3, steps_per_epoch=40, batch_size=32, lr=1e-2, seed=seed, val_snrs=[None], sam=0.0)


def _tiny():
    from edge.train.vibration import WindowSettings

    return dict(model_name="drsn1d-cw", loads=(0,), windows=WindowSettings(length=1024), width=8, depth=1,
                threads=1, quiet=True)


#: A tiny DRSN-CW on the real load-0 records: 120 steps, a few seconds on one core.
TINY = _tiny()


def _tiny_run_with(normalization: str, cwru_dir, tmp_path_factory, name: str):
    """The tiny DRSN-CW trained on windows preprocessed by ``normalization``, in a run of its own."""
    from dataclasses import replace

    from edge.train.vibration import train_cwru

    out = tmp_path_factory.mktemp("runs") / name
    train_cwru(cwru_dir, out, settings=replace(tiny_settings(), normalization=normalization), **TINY)
    return out


@pytest.fixture(scope="session")
def tiny_run(cwru_dir, tmp_path_factory):
    return _tiny_run_with("zscore", cwru_dir, tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def tiny_spectrum_run(cwru_dir, tmp_path_factory):
    """The tiny DRSN-CW trained on amplitude spectra instead of z-scored waveforms."""
    return _tiny_run_with("spectrum", cwru_dir, tmp_path_factory, "tiny-spectrum")


@pytest.fixture(scope="session")
def tiny_two_channel_run(cwru_dir, tmp_path_factory):
    """The tiny DRSN-CW reading two channels: the window in physical units and its envelope."""
    return _tiny_run_with("raw+envelope", cwru_dir, tmp_path_factory, "tiny-raw-envelope")


#: Python code that makes torch unimportable, as it is on a gateway.
BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not available on the gateway")
sys.meta_path.insert(0, Block())
"""

#: ``python -c GATEWAY_CLI ARGS...`` runs ``drsn-edge ARGS...`` as a gateway would: without torch.
GATEWAY_CLI = BLOCK_TORCH + "from edge.cli import main\nsys.exit(main(sys.argv[1:]))\n"


#: The budget of real-rate tests that expect no miss.  They judge the runtime, not the
#: host: the virtual machines these tests run on lose their CPU to the hypervisor in
#: bursts of tens of milliseconds (steal time in /proc/stat), which the tiny bundles'
#: 20 ms budget cannot tell from a slow runtime.  A window the reader slept through is
#: still caught: it is stamped from the start of the sleep (75 ms before, for these
#: windows), and the pacer counts the overrun, which these tests assert separately.  The
#: product's 5 ms budget is measured over long soaks in benchmarks/runtime_soak.py.
REAL_RATE_BUDGET_MS = 60.0


def wait_until(condition, seconds: float = 5.0) -> None:
    """Wait for ``condition`` (another thread at work), failing the test if it never holds."""
    import time

    give_up = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < give_up, f"waited {seconds:g} s in vain"
        time.sleep(0.01)


def missed_decisions(summary: dict, log: Path) -> dict:
    """What a real-rate test shows when it fails on a miss: each missed decision with where its
    time went, and whether the reader's sleeps overran or woke late (a stall of the host)."""
    import sqlite3

    with sqlite3.connect(log) as db:
        rows = db.execute("SELECT decision_id, fail_safe, latency_ms, wait_ms, inference_ms FROM decisions "
                          "WHERE fail_safe IS NOT NULL OR latency_ms > ?", (summary["budget_ms"],)).fetchall()
    return {"missed (id, fail-safe, latency, wait, inference ms)": rows,
            **{k: summary["counters"][k] for k in ("pacing_overruns", "pacing_late_wakeups")}}


def run_against(sim, bundle, tmp_path: Path, seconds: float, prepare=None, **settings):
    """Start a runtime on ``sim``'s port, stream ``seconds`` of data, run a second longer, close.

    ``prepare(runtime)`` runs after start-up (warm-up done, port open), before any data.
    Returns the runtime and its summary; the decision log is ``tmp_path / "log.db"``.
    """
    import threading

    from edge.runtime.loop import Runtime, RuntimeSettings

    runtime = Runtime(bundle, RuntimeSettings(port=sim.port, log_path=str(tmp_path / "log.db"), http=None,
                                              **settings))
    runtime.start()
    if prepare is not None:
        prepare(runtime)
    stream = threading.Thread(target=sim.run, kwargs={"duration": seconds}, daemon=True)
    stream.start()
    try:
        summary = runtime.run(seconds + 1.0)
    finally:
        runtime.close()
    stream.join(timeout=5)
    return runtime, summary


#: Overruns of the reader's sleep a real-rate test accepts: one stall of a shared host can
#: wake the reader after a window's last frame (its latency is then stamped from the start of
#: the sleep, so nothing is hidden, and the budget assertions still hold).
STALLS_TOLERATED = 1


def missed_at_real_rate(summary: dict, overruns_tolerated: int = STALLS_TOLERATED) -> bool:
    """Whether a run at real rate missed: a fail-safe or late decision, or more overruns than tolerated."""
    c = summary["counters"]
    return (c["deadline_fail_safe"] + c["late_decisions"] > 0 or c["pacing_overruns"] > overruns_tolerated)


def stream_at_real_rate(source, bundle, tmp_path: Path, seconds: float, faults=None, capfd=None,
                        overruns_tolerated: int = STALLS_TOLERATED, linger_s: float = 0.0, **run_settings):
    """``run_against`` a pty simulator streaming ``source`` at real rate, for tests that expect no miss.

    A virtual machine's host can take the CPU from the whole process for a tenth of a second
    (steal time), which no runtime can decide through.  When a run missed and the reader's pacer
    saw such a stall (a sleep that woke late), the run is made once more, in a folder of its own,
    and the test judges that one; the first run's misses are given as a warning.  A runtime that
    misses by itself misses again.  ``linger_s``: how long the simulator goes on hearing REJECTs
    after the runtime closed.  Returns the simulator, the runtime, its summary and its log.
    """
    import time
    import warnings

    from firmware_bridge.simulator import DeviceSimulator, Faults

    folder = tmp_path
    for attempt in (1, 2):
        with DeviceSimulator(source, link="pty", speed=1.0, faults=faults or Faults()) as sim:
            runtime, summary = run_against(sim, bundle, folder, seconds, **run_settings)
            time.sleep(linger_s)
        if attempt == 2 or not missed_at_real_rate(summary, overruns_tolerated):
            break
        if not summary["counters"]["pacing_late_wakeups"]:
            break  # nothing says the host stalled: the test judges this run
        missed = missed_decisions(summary, folder / "log.db")
        warnings.warn(f"the host stalled the runtime (a sleep woke late) and it missed: {missed}; the run is made "
                      "once more", stacklevel=2)
        if capfd is not None:
            capfd.readouterr()  # the test reads what the second run says
        folder = tmp_path / "again"
        folder.mkdir()
    return sim, runtime, summary, folder / "log.db"


@contextmanager
def second_reader(port: str):
    """Another program reading ``port`` meanwhile, as ModemManager probing a ttyACM device does: it takes
    whatever bytes it can from under the gateway's reads."""
    import select
    import threading

    fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    reading = threading.Event()
    reading.set()

    def take():
        while reading.is_set():
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    os.read(fd, 65536)
                except BlockingIOError:
                    pass

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    try:
        yield
    finally:
        reading.clear()
        taker.join()
        os.close(fd)
