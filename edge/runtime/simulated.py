"""The runtime against the device simulator on a real pty: the demo and on-device calibration.

Nothing is shortcut: the simulator, in a process of its own as a device is, writes
frames to one end of a pty pair at the recording's real rate (or a multiple of it);
the runtime opens the other end as a serial port, exactly as it opens a sensor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from edge.bundle import Bundle
from edge.errors import DrsnEdgeError
from edge.run_files import split_fingerprint
from edge.runtime.loop import Runtime, RuntimeSettings
from firmware_bridge.simulator import DeviceProcess
from firmware_bridge.sources import (ACTUATOR_LINES, BeltSource, VibrationSource, belt_source, cwru_source,
                                     held_out_images, held_out_spans)


@dataclass
class SimulatedSession:
    summary: dict          # Runtime.summary()
    first_decision_id: int
    frames_streamed: int
    port: str
    backend: str
    precision: str
    interrupted: bool = False  # Ctrl-C ended the session early; the summary covers what was decided until then


def run_with_simulator(bundle: str | Path | Bundle, settings: RuntimeSettings, source: VibrationSource,
                       seconds: float, rate: float = 1.0, announce=None, loop: bool = False) -> SimulatedSession:
    """Stream ``source`` for ``seconds`` at ``rate`` x real time into a runtime on ``bundle``.

    ``settings.port`` is replaced by the simulator's pty; a belt's REJECTs fire at its actuator,
    ``ACTUATOR_LINES`` downstream of the scanner, unless ``settings.distance`` says otherwise.
    ``announce(port, runtime)`` is called once the runtime is up, before data flows.  With
    ``loop`` the source starts over (time and encoder counts running on) until ``seconds`` have
    passed; without, it may end sooner.
    Ctrl-C ends the session early, marked ``interrupted``.
    """
    settings = simulator_settings(settings, isinstance(source, BeltSource))
    with DeviceProcess(source, link="pty", speed=rate, loop=loop) as device:
        runtime = Runtime(bundle, replace(settings, port=device.port))
        first_id = runtime._next_id
        if announce:
            announce(device.port, runtime)
        started, interrupted = time.monotonic(), False
        try:
            runtime.start()
            device.stream(seconds)
            summary = runtime.run(seconds + 1.0)
        except KeyboardInterrupt:  # the runtime has stopped its threads; what it decided is still reported
            interrupted = True
            summary = runtime.summary(time.monotonic() - started)
        finally:
            runtime.close()
        stats = device.close()
        return SimulatedSession(summary, first_id, stats.frames_generated, device.port,
                                runtime.manifest["backend"]["name"], runtime.manifest["precision"], interrupted)


def simulator_settings(settings: RuntimeSettings, belt: bool) -> RuntimeSettings:
    """The runtime's settings against the simulator: a belt's actuator sits ``ACTUATOR_LINES`` downstream of
    the scanner unless ``settings.distance`` says otherwise."""
    return replace(settings, distance=ACTUATOR_LINES) if belt and not settings.distance else settings


def check_run_fits_bundle(name: str | Path, bundle: Bundle, run_dir: str | Path, run: dict[str, dict]) -> None:
    """Refuse a run whose held-out data is not held out from the bundle's model: one of the other kind,
    which the bundle cannot read, or one with another split, whose test data the model may have trained on
    (its live accuracy would flatter the model).  ``run`` is the run's files (``read_run_files``)."""
    linescan = bundle.kind == "linescan"
    source = bundle.manifest["model"].get("source_run", "?")
    if linescan != (run["config.json"]["preprocessing"].get("input") == "image"):
        raise DrsnEdgeError(f"bundle {name} is a {'line-scan' if linescan else 'vibration'} bundle, but run "
                            f"{run_dir} trained {'a vibration' if linescan else 'an image'} model; give the run the "
                            f"bundle was built from ({source})")
    recorded = bundle.manifest["model"].get("split_sha256")  # bundles built before it was recorded have none
    if recorded and recorded != split_fingerprint(run["split.json"]):
        raise DrsnEdgeError(f"run {run_dir} split its data otherwise than the run bundle {name} was built from "
                            f"({source}): what {run_dir} held out may be what the bundle's model trained on, and "
                            f"its live accuracy would flatter it; give --run {source}, or a run pruned or "
                            "distilled from it")


def held_out_records(run: dict[str, dict], data: str | Path | None = None, channels: tuple[str, ...] | None = None,
                     loads: tuple[int, ...] | None = None) -> VibrationSource:
    """A vibration run's held-out CWRU segments (its ``split.json``), as an accelerometer streams them.

    Every load the run holds segments of, from the accelerometer and at the rate its model was
    trained on: another axis or rate would score the model on data it was never meant to read.
    ``channels`` streams several axes (the run's first, unless it says otherwise); ``loads`` keeps
    only some of the run's loads; ``data`` is the CWRU folder if it moved.
    """
    config = run["config.json"]
    pre = config["preprocessing"]
    trained = tuple(config["data"]["loads"])
    others = sorted(set(loads or ()) - set(trained))
    if others:
        raise DrsnEdgeError(f"the run holds no segments of load {','.join(map(str, others))}: it read loads "
                            f"{','.join(map(str, trained))}")
    return cwru_source(Path(data or config["data"]["path"]), loads=loads or trained,
                       channels=channels or (pre["channel"],), spans=held_out_spans(run["split.json"]),
                       rate_hz=pre["rate_hz"])


def held_out_belt(run: dict[str, dict], bands: int, data: str | Path | None = None, lanes: int | None = None,
                  seed: int = 0, bit_depth: int = 8) -> BeltSource:
    """A belt of ``bands`` rows of an image run's test images only (its ``split.json``), at the model's
    size: the detector's pixels are the model's, so each patch is what training showed it.

    ``run`` is the run's files (:func:`edge.run_files.read_run_files`); ``data`` is its image
    folder if it moved (default: where the run trained); ``lanes``, ``seed`` and ``bit_depth``
    are :func:`belt_source`'s.
    """
    config = run["config.json"]
    folder = Path(data or config["data"]["path"])
    images = held_out_images(run["split.json"], folder)
    if not images[0][0].is_file():
        raise DrsnEdgeError(f"the run's test images are not under {folder}; pass --data with the {config['task']} "
                            f"folder")
    return belt_source(folder, files=images, lanes=lanes, bands=bands, seed=seed, bit_depth=bit_depth,
                       size=config["preprocessing"]["size"])
