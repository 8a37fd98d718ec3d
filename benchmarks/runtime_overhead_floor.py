"""The least a runtime written in Python pays beside inference for each vibration window, on this host.

The runtime's overhead target is 10 % of inference time.  The default model infers a
window in under a millisecond, which leaves about 0.1 ms for all the rest.  This
benchmark asks what the rest costs when nothing but the unavoidable is done: one
thread that sleeps until a window is nearly due, reads the port, decodes and assembles
the frames, preprocesses, infers, decides, writes the REJECT and commits the decision's
row (the runtime's own decoder, assembler, preprocessing, backend, policy, scheduler and
log row; no second thread, queue, metrics, status page, reconnects, device clock, ACK
tracking or log bound).  It runs against the same simulator and stream, at the real
rate on one core, right after the runtime itself in the same invocation, so the two
share the host's mood.  Each step's CPU time is taken by the thread's clock.  The
windows the floor received are then replayed from memory back to back, with no port
and no sleep: the same steps warm.

Both overheads are (process CPU - inference time) / inference time, the runtime's as in
runtime_soak.py.  Writes benchmarks/results/runtime_overhead_floor.json.

    python benchmarks/runtime_overhead_floor.py --bundle dist/drsn-openvino-int8 --run runs/drsn --seconds 120
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import serial

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_soak import _cpu_seconds, cost, session, simulator_stats, start_simulator  # noqa: E402
from edge.backends import load_backend  # noqa: E402
from edge.bundle import Bundle, open_bundle  # noqa: E402
from edge.cli.common import positive_float  # noqa: E402
from edge.data.preprocess import model_input  # noqa: E402
from edge.errors import DrsnEdgeError  # noqa: E402
from edge.runtime.assembler import VibrationAssembler  # noqa: E402
from edge.runtime.decision_log import INSERT, DecisionRow, connect  # noqa: E402
from edge.runtime.decisions import DecisionPolicy, RejectScheduler  # noqa: E402
from edge.runtime.metrics import latency_percentiles  # noqa: E402
from firmware_bridge.codec import FrameDecoder, encode_frame  # noqa: E402
from firmware_bridge.protocol import Hello, Samples  # noqa: E402

HERE = Path(__file__).resolve().parent
#: The floor wakes this long before a window's last frame is due (the frames come every 10 ms).
WAKE_EARLY_S = 0.006
STEPS = ("sleep", "read", "decode", "assemble", "preprocess", "inference", "decide", "write", "log")


class Floor:
    """The unavoidable steps from bytes to a logged decision, each charged its thread CPU time (``cpu``)."""

    def __init__(self, bundle: Bundle, log: Path):
        m = bundle.manifest
        pre = m["preprocessing"]
        self.sha256, self.normalization = bundle.manifest_sha256, pre["normalization"]
        self.backend = load_backend(bundle, threads=1)
        self.policy = DecisionPolicy.for_bundle(m)
        self.scheduler = RejectScheduler("vibration")
        self.decoder = FrameDecoder()
        self.assembler = VibrationAssembler(pre["window"], pre["hop"], 0, pre["rate_hz"])
        self.hop_s = pre["hop"] / pre["rate_hz"]
        self.db = connect(log)
        self.cpu: Counter[str] = Counter()
        self.inference_s = 0.0  # wall time in the backend
        self.windows = self.frames = self._seq = 0
        self.latencies_ms: list[float] = []
        self.backend.warm_up()  # as the runtime does before it reads
        self.start_clock()

    def start_clock(self) -> None:
        """Charge nothing done before now (start-up) to any step."""
        self._clock = time.thread_time()

    def charge(self, step: str) -> None:
        """Charge the thread CPU time since the previous charge to ``step``."""
        now = time.thread_time()
        self.cpu[step] += now - self._clock
        self._clock = now

    def take(self, data: bytes, arrived: float, port: serial.Serial | None) -> int:
        """Decide every window that ``data`` completes; REJECTs go to ``port`` (None: replayed, not written)."""
        blocks = [(f.message.data, f.message.scale, f.timestamp_us) for f in self.decoder.feed(data)
                  if isinstance(f.message, Samples)]
        self.frames += len(blocks)
        self.charge("decode")
        units = self.assembler.push_blocks(blocks, arrived) if blocks else []
        self.charge("assemble")
        for unit in units:
            x = model_input(unit.data, self.normalization)
            self.charge("preprocess")
            t0 = time.perf_counter()
            logits = self.backend.infer(x)
            self.inference_s += time.perf_counter() - t0
            self.charge("inference")
            verdict = self.policy.decide(logits)[0]
            self.windows += 1
            command = self.scheduler.command(self.windows, verdict, unit.end, 0, self.policy.reason(verdict))
            self.charge("decide")
            if command is not None and port is not None:
                port.write(encode_frame(command, self._seq, int(time.monotonic() * 1e6)))
                self._seq += 1
            latency_ms = (time.monotonic() - unit.arrived) * 1e3
            self.charge("write")
            self.db.execute(INSERT, DecisionRow(self.windows, time.time(), "vibration", unit.start, unit.end,
                                                unit.device_time_us, 0, verdict.label, verdict.scores, verdict.reject,
                                                verdict.fail_safe, latency_ms, None, self.sha256).values())
            self.charge("log")
            self.latencies_ms.append(latency_ms)
        return len(units)

    def figures(self, cpu_s: float) -> dict:
        """Per window: each step's CPU (us), inference (ms), and the overhead as the soak reckons it."""
        n = max(self.windows, 1)
        return {"windows": self.windows, "frames": self.frames,
                "inference_ms_per_window": 1e3 * self.inference_s / n, "cpu_ms_per_window": 1e3 * cpu_s / n,
                "overhead_cpu_fraction_of_inference": (cpu_s - self.inference_s) / self.inference_s,
                "steps_cpu_us_per_window": {step: 1e6 * self.cpu[step] / n for step in STEPS if step in self.cpu},
                "latency": latency_percentiles(self.latencies_ms)}


def live(bundle: Bundle, run: Path, seconds: float, cores: list[int], tmp: Path) -> tuple[dict, list[bytes]]:
    """The floor against the simulator at the real rate; its figures and every read, for the replay."""
    floor = Floor(bundle, tmp / "floor.db")
    sim, port_name = start_simulator(run, seconds, "realtime", cores)
    port = serial.Serial(port_name, timeout=0.2)
    port.write(encode_frame(Hello(request=True), 0, 0))  # the simulator streams once it is greeted
    reads: list[bytes] = []
    until, last_window = time.monotonic() + seconds + 2.0, None
    cpu0 = _cpu_seconds()
    floor.start_clock()
    while time.monotonic() < until:
        if last_window is not None and (pause := last_window + floor.hop_s - WAKE_EARLY_S - time.monotonic()) > 0:
            time.sleep(pause)
        floor.charge("sleep")
        try:
            data = port.read(max(1, port.in_waiting))
        except (serial.SerialException, OSError):  # the simulator has ended its stream and closed its pty
            break
        arrived = time.monotonic()
        floor.charge("read")
        if data:
            reads.append(data)
            if floor.take(data, arrived, port):
                last_window = arrived
    cpu_s = _cpu_seconds() - cpu0
    port.close()
    stats = simulator_stats(sim)
    if not floor.windows:
        raise SystemExit(f"runtime_overhead_floor.py: the floor decided no window in {seconds:g} s: the simulator "
                         f"streamed {stats['frames_generated']} frames, of which {floor.frames} arrived")
    return floor.figures(cpu_s) | {"frames_streamed": stats["frames_generated"]}, reads


def replay(bundle: Bundle, reads: list[bytes], tmp: Path) -> dict:
    """The same reads through the same steps back to back, from memory: no port, no sleep."""
    floor = Floor(bundle, tmp / "replay.db")
    cpu0 = _cpu_seconds()
    floor.start_clock()
    for data in reads:
        floor.take(data, time.monotonic(), None)
    figures = floor.figures(_cpu_seconds() - cpu0)
    figures.pop("latency")  # nothing waited for a port
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("dist/drsn-openvino-int8"))
    parser.add_argument("--run", type=Path, default=Path("runs/drsn"), help="the run whose held-out records stream")
    parser.add_argument("--seconds", type=positive_float, default=120.0, help="length of each live arm (default 120)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "runtime_overhead_floor.json")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cores[0]})  # the runtime and the floor: one core; the simulator: another
    try:
        bundle = open_bundle(args.bundle)
    except DrsnEdgeError as exc:
        parser.error(str(exc))
    if not (args.run / "split.json").is_file():
        parser.error(f"--run {args.run}: no run there (its split.json says which records are held out)")
    if bundle.kind != "vibration":
        parser.error(f"{args.bundle} is a {bundle.kind} bundle; the floor is measured for a vibration model")
    with tempfile.TemporaryDirectory(prefix="drsn-floor-") as name:
        tmp = Path(name)
        print(f"the runtime, {args.seconds:g} s at the real rate ...", flush=True)
        summary, _, _ = session(args.bundle, args.run, args.seconds, "realtime", None, 64, tmp / "runtime.db", cores)
        print(f"the floor, {args.seconds:g} s at the real rate ...", flush=True)
        floor, reads = live(bundle, args.run, args.seconds, cores, tmp)
        warm = replay(bundle, reads, tmp)
    runtime = cost(summary) | {"decisions": summary["counters"]["decisions"], "latency": summary["latency"]}
    cold, hot = floor["steps_cpu_us_per_window"], warm["steps_cpu_us_per_window"]
    doc = {"benchmark": "runtime_overhead_floor", "bundle": str(args.bundle), "date": time.strftime("%Y-%m-%d"),
           "cores": 1, "seconds": args.seconds, "target_overhead": 0.10,
           "runtime": runtime, "floor": floor, "floor_replayed_back_to_back": warm,
           "ratios": {"runtime_overhead_over_floor": runtime["overhead_cpu_fraction_of_inference"]
                      / floor["overhead_cpu_fraction_of_inference"],
                      "cold_over_warm": {step: cold[step] / hot[step] for step in hot if hot[step] > 0}}}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"runtime: {100 * runtime['overhead_cpu_fraction_of_inference']:.0f}% of inference by CPU time "
          f"({runtime['cpu_ms_per_decision']:.2f} ms CPU and {runtime['inference_ms_per_decision']:.2f} ms inference "
          f"a decision, {runtime['decisions']} decisions)")
    print(f"floor:   {100 * floor['overhead_cpu_fraction_of_inference']:.0f}% ({floor['cpu_ms_per_window']:.2f} ms CPU "
          f"and {floor['inference_ms_per_window']:.2f} ms inference a window, {floor['windows']} windows, "
          f"{floor['frames']} of {floor['frames_streamed']} frames)")
    print(f"replayed back to back: {100 * warm['overhead_cpu_fraction_of_inference']:.0f}% "
          f"({warm['inference_ms_per_window']:.2f} ms inference a window); target <= 10%")
    print("CPU per window, us (live / back to back): " + ", ".join(
        f"{step} {cold[step]:.0f}" + (f" / {hot[step]:.0f}" if step in hot else "") for step in cold))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
