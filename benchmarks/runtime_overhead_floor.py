"""The least a runtime written in Python pays beside inference for each window or tile, on this host.

The runtime's overhead target is 10 % of inference time.  The default vibration model
infers a window in under a millisecond, which leaves about 0.1 ms for all the rest; the
shipped castings ensemble infers a line-scan tile in about 8 ms.  This benchmark asks
what the rest costs when nothing but the unavoidable is done: one thread that sleeps
until a window or tile is nearly due, reads the port, decodes and assembles the frames,
preprocesses, infers, decides, writes the REJECTs and commits the decisions' rows (the
runtime's own decoder, assembler, preprocessing, backend, policy, scheduler, line-scan
read pacer and log row; no second thread, queue, metrics, status page, reconnects,
device clock, ACK tracking or log bound).  It runs against the same device and stream,
at the real rate, right after the runtime itself in the same invocation, so the two
share the host's mood.  Each step's CPU time is taken by the thread's clock.  The data
the floor received is then replayed from memory back to back, with no port and no
sleep: the same steps warm.

The bundle says what streams.  A vibration bundle: the run's held-out CWRU records
(``--run``), the runtime and the floor on one core and the device on the other.  A
line-scan bundle: a belt of X-ray castings test patches, 1,250 lines/s x 640 px, as in
linescan_throughput.py; the device's process is not pinned, the runtime and the floor
are (to the first core).

Both overheads are (CPU - inference time) / inference time, by the process's CPU time:
the runtime's from its warm-up on, with its warm-up and keep-alive inferences on its
inference clock (as runtime_soak.py reckons it); the floor's while it streams, its
warm-up done.  Writes benchmarks/results/runtime_overhead_floor.json (vibration)
or runtime_overhead_floor_linescan.json (line-scan) unless ``--out`` says otherwise.

    python benchmarks/runtime_overhead_floor.py --bundle dist/drsn-openvino-int8 --run runs/drsn --seconds 120
    python benchmarks/runtime_overhead_floor.py --bundle dist/castings-w16-x4-ov-int8 --seconds 120
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import serial

sys.path.insert(0, str(Path(__file__).resolve().parent))
from linescan_throughput import castings_belt  # noqa: E402
from runtime_soak import _cpu_seconds, cost, session, simulator_stats, start_simulator  # noqa: E402
from results_file import write_results  # noqa: E402
from edge.backends import load_backend  # noqa: E402
from edge.bundle import Bundle, open_bundle  # noqa: E402
from edge.cli.common import positive_float  # noqa: E402
from edge.data.catalog import default_data_root  # noqa: E402
from edge.data.preprocess import model_input, tile_input  # noqa: E402
from edge.errors import DrsnEdgeError  # noqa: E402
from edge.runtime.assembler import LineAssembler, Unit, VibrationAssembler  # noqa: E402
from edge.runtime.decision_log import INSERT, DecisionRow, connect  # noqa: E402
from edge.runtime.decisions import DecisionPolicy, RejectScheduler  # noqa: E402
from edge.runtime.loop import RuntimeSettings  # noqa: E402
from edge.runtime.metrics import latency_percentiles  # noqa: E402
from edge.runtime.pacing import line_pacer  # noqa: E402
from edge.runtime.simulated import run_with_simulator  # noqa: E402
from firmware_bridge.codec import FrameDecoder, encode_frame, line_frame_bytes  # noqa: E402
from firmware_bridge.protocol import Hello, Line, Samples  # noqa: E402
from firmware_bridge.simulator import DeviceProcess  # noqa: E402
from firmware_bridge.sources import ACTUATOR_LINES, BeltSource  # noqa: E402

HERE = Path(__file__).resolve().parent
#: The vibration floor wakes this long before a window's last frame is due (the frames come every 10 ms).
WAKE_EARLY_S = 0.006
STEPS = ("sleep", "read", "decode", "assemble", "preprocess", "inference", "decide", "write", "log")


@dataclass
class Read:
    """What one read of the port brought, and when: the arrival, or the start of the sleep it came in."""
    data: bytes
    arrived: float
    exact: bool = True


class Floor:
    """The unavoidable steps from bytes to logged decisions, each charged its thread CPU time (``cpu``).

    A line-scan floor warms up at the batch of ``belt``'s patches across, and paces its reads
    with the runtime's line pacer (``belt``'s line rate and width): a sleep long enough to fill
    the kernel's buffer would hold the device back.  Replayed, it does not read.
    """

    def __init__(self, bundle: Bundle, log: Path, belt: BeltSource | None = None):
        m = bundle.manifest
        pre = m["preprocessing"]
        self.kind, self.sha256, self.normalization = bundle.kind, bundle.manifest_sha256, pre["normalization"]
        self.budget_ms = m["runtime"]["budget_ms"]
        self.backend = load_backend(bundle, threads=1)
        self.policy = DecisionPolicy.for_bundle(m)
        self.decoder = FrameDecoder()
        self.pacer, batch = None, 1
        if self.kind == "vibration":
            self.assembler = VibrationAssembler(pre["window"], pre["hop"], 0, pre["rate_hz"])
            self.scheduler = RejectScheduler("vibration")
            self.hop_s = pre["hop"] / pre["rate_hz"]
        else:
            self.assembler = LineAssembler(pre["tile_lines"], 0, patch_width=pre["patch_width"],
                                           actuator_distance=ACTUATOR_LINES)
            self.scheduler = RejectScheduler("linescan", ACTUATOR_LINES)
            self.pacer = line_pacer(belt.hello.rate_hz, line_frame_bytes(belt.hello))
            batch = self.assembler.geometry(belt.rows.shape[1])[0]
        self.db = connect(log)
        self.cpu: Counter[str] = Counter()
        self.inference_s = 0.0  # wall time in the backend
        self.units = self.decisions = self.frames = self._seq = 0
        self.latencies_ms: list[float] = []
        self._last_unit: float | None = None
        self.backend.warm_up(batch=batch)  # as the runtime does before it reads
        self.start_clock()

    def start_clock(self) -> None:
        """Charge nothing done before now (start-up) to any step."""
        self._clock = time.thread_time()

    def charge(self, step: str) -> None:
        """Charge the thread CPU time since the previous charge to ``step``."""
        now = time.thread_time()
        self.cpu[step] += now - self._clock
        self._clock = now

    def read(self, port: serial.Serial) -> Read:
        """Sleep until the next window or tile is nearly due (while the kernel's buffer has room), then read."""
        now = time.monotonic()
        if self.pacer is not None:
            pause = self.pacer.pause(now, self.assembler.samples_needed())
        else:
            pause = 0.0 if self._last_unit is None else self._last_unit + self.hop_s - WAKE_EARLY_S - now
        if pause > 0:
            time.sleep(pause)
        self.charge("sleep")
        data = port.read(max(1, port.in_waiting))
        if len(data) == 1 and (waiting := port.in_waiting):  # woken by a frame's first byte: the rest is there
            data += port.read(waiting)
        if self.pacer is not None and pause > 0:  # waiting when it woke: stamped with the start of the sleep
            self.pacer.woke_to(time.monotonic(), len(data))
            got = Read(data, now, exact=False)
        else:
            got = Read(data, time.monotonic())
        self.charge("read")
        return got

    def take(self, got: Read, port: serial.Serial | None) -> int:
        """Decide every unit that ``got`` completes; REJECTs go to ``port`` (None: replayed, not written)."""
        units = self._assemble(got)
        for unit in units:
            self._decide(unit, port)
        if units:
            self._last_unit = got.arrived
        return len(units)

    def _assemble(self, got: Read) -> list[Unit]:
        frames = self.decoder.feed(got.data)
        self.charge("decode")
        if self.kind == "vibration":
            blocks = [(f.message.data, f.message.scale, f.timestamp_us) for f in frames
                      if isinstance(f.message, Samples)]
            self.frames += len(blocks)
            units = self.assembler.push_blocks(blocks, got.arrived) if blocks else []
        else:
            lines = [f for f in frames if isinstance(f.message, Line)]
            self.frames += len(lines)
            units = [unit for f in lines
                     for unit in self.assembler.push(f.message.pixels, f.encoder, f.timestamp_us, got.arrived)]
            if lines and self.pacer is not None:
                self.pacer.received(got.arrived, len(lines), lines[-1].timestamp_us, got.exact)
                if units and not got.exact:  # a tile completed while the floor slept: pace again later
                    self.pacer.overrun(time.monotonic())
        self.charge("assemble")
        return units

    def _decide(self, unit: Unit, port: serial.Serial | None) -> None:
        """Infer one window or tile, decide each of its lanes, write its REJECTs in one go, commit its rows."""
        x = model_input(unit.data, self.normalization) if self.kind == "vibration" else \
            tile_input(unit.data, self.normalization)
        self.charge("preprocess")
        t0 = time.perf_counter()
        logits = self.backend.infer(x)
        self.inference_s += time.perf_counter() - t0
        self.charge("inference")
        verdicts = self.policy.decide(logits)
        first = self.decisions + 1
        commands = [self.scheduler.command(first + lane, verdict, unit.end, lane, self.policy.reason(verdict))
                    for lane, verdict in enumerate(verdicts)]
        self.units += 1
        self.decisions += len(verdicts)
        self.charge("decide")
        frames = [encode_frame(command, self._seq + k, int(time.monotonic() * 1e6))
                  for k, command in enumerate(c for c in commands if c is not None)]
        if frames and port is not None:
            port.write(b"".join(frames))
        self._seq += len(frames)
        latency_ms = (time.monotonic() - unit.arrived) * 1e3
        self.charge("write")
        rows = [DecisionRow(first + lane, time.time(), self.kind, unit.start, unit.end, unit.device_time_us, lane,
                            verdict.label, verdict.scores, verdict.reject, verdict.fail_safe, latency_ms,
                            None if command is None or self.kind == "vibration" else command.at, self.sha256).values()
                for lane, (verdict, command) in enumerate(zip(verdicts, commands))]
        if len(rows) == 1:
            self.db.execute(INSERT, rows[0])
        else:
            with self.db:  # one transaction per tile, as the runtime commits it
                self.db.execute("BEGIN")
                self.db.executemany(INSERT, rows)
        self.charge("log")
        self.latencies_ms.append(latency_ms)

    def figures(self, cpu_s: float) -> dict:
        """Per window or tile: each step's CPU (us), inference (ms), and the overhead as the soak reckons it."""
        n = max(self.units, 1)
        return {"units": self.units, "decisions": self.decisions, "frames": self.frames,
                "inference_ms_per_unit": 1e3 * self.inference_s / n, "cpu_ms_per_unit": 1e3 * cpu_s / n,
                "overhead_cpu_fraction_of_inference": (cpu_s - self.inference_s) / self.inference_s,
                "steps_cpu_us_per_unit": {step: 1e6 * self.cpu[step] / n for step in STEPS if step in self.cpu},
                "latency": latency_percentiles(self.latencies_ms), "budget_ms": self.budget_ms,
                "late_units": sum(latency > self.budget_ms for latency in self.latencies_ms)}


def stream_into(floor: Floor, port: serial.Serial, seconds: float) -> tuple[list[Read], float]:
    """Run the floor on ``port`` for ``seconds`` (or until the device closes it); every read, and the CPU spent."""
    reads: list[Read] = []
    until = time.monotonic() + seconds
    cpu0 = _cpu_seconds()
    floor.start_clock()
    while time.monotonic() < until:
        try:
            got = floor.read(port)
        except (serial.SerialException, OSError):  # the device has ended its stream and closed its pty
            break
        if got.data:
            reads.append(got)
            floor.take(got, port)
    return reads, _cpu_seconds() - cpu0


def nothing_decided(floor: Floor, seconds: float, streamed: int) -> SystemExit:
    return SystemExit(f"runtime_overhead_floor.py: the floor decided nothing in {seconds:g} s: the device streamed "
                      f"{streamed} frames, of which {floor.frames} arrived")


def live_vibration(bundle: Bundle, run: Path, seconds: float, cores: list[int], tmp: Path) -> tuple[dict, list]:
    """The floor against the simulator of the run's held-out records at the real rate; its figures and reads."""
    floor = Floor(bundle, tmp / "floor.db")
    sim, port_name = start_simulator(run, seconds, "realtime", cores)
    port = serial.Serial(port_name, timeout=0.2)
    port.write(encode_frame(Hello(request=True), 0, 0))  # the simulator streams once it is greeted
    reads, cpu_s = stream_into(floor, port, seconds + 2.0)
    port.close()
    streamed = simulator_stats(sim)["frames_generated"]
    if not floor.units:
        raise nothing_decided(floor, seconds, streamed)
    return floor.figures(cpu_s) | {"frames_streamed": streamed}, reads


def pin(core: int) -> set[int] | None:
    """Put the calling thread (and the threads it starts from now on) on ``core``; the cores it had (None: the
    host cannot pin)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    return before


def unpin(before: set[int] | None) -> None:
    if before is not None:
        os.sched_setaffinity(0, before)


def runtime_linescan(bundle: Path, source: BeltSource, seconds: float, core: int, tmp: Path) -> dict:
    """The runtime on the belt at the real rate, as linescan_throughput.py runs it: its summary, with the CPU
    the process spent from the start of its warm-up (``cpu_s``)."""
    settings = RuntimeSettings(port="", log_path=str(tmp / "runtime.db"), http=None, threads=1, queue_size=8)
    marks: dict = {}

    def loaded(port: str, runtime) -> None:  # the device's process is up: the runtime's threads start on one core
        marks["before"], marks["cpu0"] = pin(core), _cpu_seconds()

    try:
        done = run_with_simulator(bundle, settings, source, seconds, 1.0, announce=loaded, loop=True)
        cpu_s = _cpu_seconds() - marks["cpu0"]
    finally:
        unpin(marks.get("before"))
    return done.summary | {"cpu_s": cpu_s, "frames_streamed": done.frames_streamed}


def live_linescan(bundle: Bundle, source: BeltSource, seconds: float, core: int, tmp: Path) -> tuple[dict, list]:
    """The floor on the belt at the real rate; its figures and every read."""
    with DeviceProcess(source, link="pty", speed=1.0, loop=True) as device:
        before = pin(core)  # the device's process is up, on any core
        try:
            floor = Floor(bundle, tmp / "floor.db", source)
            port = serial.Serial(device.port, timeout=0.2)
            device.stream(seconds)
            reads, cpu_s = stream_into(floor, port, seconds + 1.0)
            port.close()
        finally:
            unpin(before)
        stats = device.close()
    if not floor.units:
        raise nothing_decided(floor, seconds, stats.frames_generated)
    return floor.figures(cpu_s) | {"frames_streamed": stats.frames_generated,
                                   "frames_lost_offline": stats.frames_lost_offline}, reads


def replay(bundle: Bundle, reads: list[Read], tmp: Path, source: BeltSource | None) -> dict:
    """The same reads through the same steps back to back, from memory: no port, no sleep."""
    floor = Floor(bundle, tmp / "replay.db", source)
    cpu0 = _cpu_seconds()
    floor.start_clock()
    for got in reads:
        floor.take(Read(got.data, time.monotonic()), None)
    figures = floor.figures(_cpu_seconds() - cpu0)
    for waited in ("latency", "late_units"):  # nothing waited for a port
        figures.pop(waited)
    return figures


def runtime_figures(summary: dict) -> dict:
    """The runtime's cost (runtime_soak.py's), per decision and per window or tile (``unit``), and its misses."""
    c = summary["counters"]
    units = max(c["assembler_units"], 1)
    return cost(summary) | {"decisions": c["decisions"], "units": units,
                            "cpu_ms_per_unit": 1e3 * summary["cpu_s"] / units,
                            "inference_ms_per_unit": 1e3 * summary["stages_s"]["inference"] / units,
                            "latency": summary["latency"], "budget_ms": summary["budget_ms"],
                            "missed": {"fail_safe": c["deadline_fail_safe"] + c["overload_fail_safe"],
                                       "late": c["late_decisions"], "lost_frames": c["decoder_lost_frames"],
                                       "late_wakeups": c["pacing_late_wakeups"]}}


def measure(args: argparse.Namespace, bundle: Bundle, source: BeltSource | None,
            tmp: Path) -> tuple[dict, dict, list[Read]]:
    """The runtime, then the floor, on the run's held-out records or on the belt ``source``: (the runtime's
    summary, the floor's figures, the floor's reads)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    print(f"the runtime, {args.seconds:g} s at the real rate ...", flush=True)
    if bundle.kind == "vibration":
        before = pin(cores[0])  # the runtime and the floor: one core; the simulator: another
        try:
            summary, _, _ = session(args.bundle, args.run, args.seconds, "realtime", None, 64, tmp / "runtime.db",
                                    cores)
            print(f"the floor, {args.seconds:g} s at the real rate ...", flush=True)
            floor, reads = live_vibration(bundle, args.run, args.seconds, cores, tmp)
        finally:
            unpin(before)
    else:
        summary = runtime_linescan(args.bundle, source, args.seconds, cores[0], tmp)
        print(f"the floor, {args.seconds:g} s at the real rate ...", flush=True)
        floor, reads = live_linescan(bundle, source, args.seconds, cores[0], tmp)
    return summary, floor, reads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("dist/drsn-openvino-int8"),
                        help="a vibration or line-scan bundle (default dist/drsn-openvino-int8)")
    parser.add_argument("--run", type=Path, default=Path("runs/drsn"),
                        help="vibration: the run whose held-out records stream (default runs/drsn)")
    parser.add_argument("--data", type=Path, default=None,
                        help="line-scan: the data root holding xray/ (default ../shared/data)")
    parser.add_argument("--seconds", type=positive_float, default=120.0, help="length of each live arm (default 120)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results/runtime_overhead_floor.json, or "
                             "runtime_overhead_floor_linescan.json for a line-scan bundle")
    args = parser.parse_args()
    try:
        bundle = open_bundle(args.bundle)
    except DrsnEdgeError as exc:
        parser.error(str(exc))
    if bundle.kind == "vibration" and not (args.run / "split.json").is_file():
        parser.error(f"--run {args.run}: no run there (its split.json says which records are held out)")
    source = None
    if bundle.kind == "linescan":
        data = args.data or default_data_root()
        if not (data / "xray").is_dir():
            parser.error(f"--data {data}: no xray/ folder there (the belt streams its castings test patches)")
        source = castings_belt(data)
    suffix = "" if bundle.kind == "vibration" else "_linescan"
    out = args.out or HERE / "results" / f"runtime_overhead_floor{suffix}.json"
    with tempfile.TemporaryDirectory(prefix="drsn-floor-") as name:
        tmp = Path(name)
        summary, floor, reads = measure(args, bundle, source, tmp)
        warm = replay(bundle, reads, tmp, source)
    runtime = runtime_figures(summary)
    unit = "window" if bundle.kind == "vibration" else "tile"
    cold, hot = floor["steps_cpu_us_per_unit"], warm["steps_cpu_us_per_unit"]
    doc = {"benchmark": "runtime_overhead_floor", "bundle": str(args.bundle), "kind": bundle.kind, "unit": unit,
           "date": time.strftime("%Y-%m-%d"), "cores": 1, "seconds": args.seconds, "target_overhead": 0.10,
           "runtime": runtime, "floor": floor, "floor_replayed_back_to_back": warm,
           "ratios": {"runtime_overhead_over_floor": runtime["overhead_cpu_fraction_of_inference"]
                      / floor["overhead_cpu_fraction_of_inference"],
                      "cold_over_warm": {step: cold[step] / hot[step] for step in hot if hot[step] > 0}}}
    write_results(doc, out)
    missed = runtime["missed"]
    print(f"runtime: {100 * runtime['overhead_cpu_fraction_of_inference']:.0f}% of inference by CPU time "
          f"({runtime['cpu_ms_per_unit']:.2f} ms CPU and {runtime['inference_ms_per_unit']:.2f} ms inference "
          f"a {unit}, {runtime['units']} {unit}s, {runtime['decisions']} decisions; {missed['fail_safe']} fail-safe "
          f"and {missed['late']} late of them)")
    print(f"floor:   {100 * floor['overhead_cpu_fraction_of_inference']:.0f}% ({floor['cpu_ms_per_unit']:.2f} ms CPU "
          f"and {floor['inference_ms_per_unit']:.2f} ms inference a {unit}, {floor['units']} {unit}s, "
          f"{floor['late_units']} of them past the {floor['budget_ms']:g} ms budget, "
          f"{floor['frames']} of {floor['frames_streamed']} frames)")
    print(f"replayed back to back: {100 * warm['overhead_cpu_fraction_of_inference']:.0f}% "
          f"({warm['inference_ms_per_unit']:.2f} ms inference a {unit}); target <= 10%")
    print(f"CPU per {unit}, us (live / back to back): " + ", ".join(
        f"{step} {cold[step]:.0f}" + (f" / {hot[step]:.0f}" if step in hot else "") for step in cold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
