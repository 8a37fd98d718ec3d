"""Runtime soak: end-to-end latency against the budget at the real rate, overhead, and sustained rate.

The device simulator streams a run's held-out CWRU test segments (looped) over a real
pty; the runtime decides every window with the bundle's backend.  Part 1 runs at the
real rate for --seconds and reports p50/p99/p99.9/max from last-sample arrival to
decision written, deadline misses, and the runtime's overhead (decode, assembly,
preprocessing, decision, REJECT write, log) as a fraction of inference time.  Part 2
streams as fast as the runtime takes it, with a budget too large to shed anything,
and reports the sustained rate as a multiple of real time.  On a virtual machine, the
time the host steals from the runtime's core is sampled, and misses are split into
those near a steal and those clear of any.  The runtime's resident memory is sampled
every second in both parts, to show it stays flat (bounded queues, a bounded log).
With --trace, a process of its own watches the runtime's threads and core every 20 ms
(benchmarks/proc_timeline.py), and each miss is read against it: major page faults,
steal, the whole machine paused (the watcher on the other core held up too), other
work on the core, a thread kept waiting for the CPU, or nothing seen.
The runtime runs on one core; the simulator runs in a process of its own on the other
core, as the device would be a microcontroller of its own.  Writes
benchmarks/results/runtime_soak.json.

    python benchmarks/runtime_soak.py --bundle dist/drsn-openvino-int8 --run runs/drsn --seconds 600
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import sqlite3
import sys
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from proc_timeline import cpu_ticks, read_around
from results_file import write_results
from edge.cli.common import non_negative_float, positive_float, probability, realtime_priority as priority_arg
from edge.runtime.loop import Runtime, RuntimeSettings
from edge.runtime.metrics import latency_percentiles
from edge.runtime.realtime import DEFAULT_SERVICE_PRIORITY
from edge.runtime.scoring import score_vibration
from edge.runtime.simulated import held_out_records
from edge.run_files import read_run_files

HERE = Path(__file__).resolve().parent


def _cpu_seconds() -> float:
    """CPU time of this process (the runtime; the simulator is a process of its own)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cost(summary: dict) -> dict:
    """CPU and inference per decision, and the overhead beyond inference by stage clocks and by CPU time.

    The stage clocks are wall time and the reader and decider share one core, so a stage can be
    charged for the other thread's work; CPU time of the whole process minus inference is the
    stricter measure of what the runtime costs beyond the model.
    """
    decisions, inference = max(summary["counters"]["decisions"], 1), summary["stages_s"]["inference"]
    return {"cpu_ms_per_decision": 1e3 * summary["cpu_s"] / decisions,
            "inference_ms_per_decision": 1e3 * inference / decisions,
            "overhead_fraction_of_inference": summary["overhead_fraction_of_inference"],
            "overhead_cpu_fraction_of_inference": (summary["cpu_s"] - inference) / inference,
            **{f"{name}_cpu_ms_per_decision": 1e3 * seconds / decisions
               for name, seconds in summary["thread_cpu_s"].items()}}


def where_time_went(log: Path, first_id: int, budget_ms: float) -> dict:
    """Each decided window's latency split into waiting for the decider, inference and the rest.

    From the decision log's own columns; for every decision that went through inference,
    and for the late ones alone, with the part that was largest in each late decision.
    """
    with sqlite3.connect(log) as db:
        rows = np.array(db.execute("SELECT latency_ms, wait_ms, inference_ms FROM decisions WHERE decision_id >= ? "
                                   "AND inference_ms IS NOT NULL", (first_id,)).fetchall(), dtype=float)
    if not len(rows):
        return {}
    parts = np.column_stack([rows[:, 1], rows[:, 2], rows[:, 0] - rows[:, 1] - rows[:, 2]])
    names = ("wait", "inference", "rest")

    def summary(selected: np.ndarray) -> dict:
        return {name: latency_percentiles(selected[:, k]) for k, name in enumerate(names)}

    late = parts[rows[:, 0] > budget_ms]
    out = {"decided": summary(parts), "late": len(late)}
    if len(late):
        largest = np.bincount(late.argmax(axis=1), minlength=3)
        out |= {"late_parts": summary(late), "late_largest_part": dict(zip(names, map(int, largest)))}
    return out


def stolen_seconds(cpu: str = "cpu") -> float | None:
    """Time the hypervisor has stolen so far from ``cpu`` ("cpu3"; "cpu": all of them), in seconds; None
    where /proc/stat has no steal column (not Linux)."""
    ticks = cpu_ticks(cpu)
    return ticks[7] / os.sysconf("SC_CLK_TCK") if ticks is not None and len(ticks) > 7 else None


class Sampler:
    """``read()`` every ``every_s`` seconds in a thread of its own: ``samples`` of (wall time, value).

    Values that ``read`` cannot give (None: not on Linux) are left out.
    """

    def __init__(self, read: Callable[[], float | None], every_s: float):
        self.read, self.every_s = read, every_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="sampler", daemon=True)

    def _sample(self) -> None:
        while True:
            value = self.read()
            if value is not None:
                self.samples.append((time.time(), value))
            if self._stop.wait(self.every_s):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class StealClock(Sampler):
    """Time the hypervisor took from one CPU (``steal`` in /proc/stat), sampled in a thread of its own.

    On a virtual machine a stolen slice stops the runtime's thread mid-window however
    well it is written; each late decision is checked against the steal around it, so
    the misses the runtime caused can be told from those the host caused.  Empty where
    /proc/stat has no steal column (not Linux).
    """

    def __init__(self, cpu: int, every_s: float = 0.25):
        super().__init__(lambda: stolen_seconds(f"cpu{cpu}"), every_s)
        self.cpu = cpu

    def attribute(self, log: Path, first_id: int, budget_ms: float, margin_s: float = 0.5) -> dict:
        """Decisions, and misses (fail-safe or late: over the budget), near a steal of the host and clear of any.

        A decision's window runs from ``margin_s`` before its last sample arrived to
        ``margin_s`` after it was made (samples are ``every_s`` apart).
        """
        if len(self.samples) < 2:
            return {}
        t, stolen = np.array(self.samples).T
        with sqlite3.connect(log) as db:
            rows = np.array(db.execute("SELECT wall_time, latency_ms FROM decisions WHERE decision_id >= ?",
                                       (first_id,)).fetchall(), dtype=float).reshape(-1, 2)
        start = rows[:, 0] - rows[:, 1] / 1e3 - margin_s
        during = np.interp(rows[:, 0] + margin_s, t, stolen) - np.interp(start, t, stolen) > 0
        missed = rows[:, 1] > budget_ms
        return {"cpu": self.cpu, "stolen_s": float(stolen[-1] - stolen[0]), "margin_s": margin_s,
                "decisions_near_steal": int(during.sum()), "misses_near_steal": int((missed & during).sum()),
                "decisions_clear_of_steal": int((~during).sum()),
                "misses_clear_of_steal": int((missed & ~during).sum())}


class Timeline:
    """``proc_timeline.py`` watching this process (the runtime) from the simulator's core, and the names of
    this process's threads, so that each deadline miss can be read against what its threads and its core
    did: page faults, waiting for the CPU, other work on the core, steal."""

    def __init__(self, cpu: int, beside: int, path: Path, every_s: float = 0.02):
        self.cpu, self.beside, self.path, self.every_s = cpu, beside, path, every_s
        self.names: dict[int, str] = {}
        self.data: dict = {}
        self._namer = Sampler(self._name_threads, 2.0)   # the runtime starts its threads after warm-up

    def _name_threads(self) -> None:
        self.names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id is not None})

    def __enter__(self):
        self._proc = subprocess.Popen(
            [sys.executable, str(HERE / "proc_timeline.py"), "--pid", str(os.getpid()), "--cpu", str(self.cpu),
             "--every", str(self.every_s), "--out", str(self.path)],
            preexec_fn=lambda: os.sched_setaffinity(0, {self.beside}))
        self._namer.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._namer.__exit__(*exc)
        self._proc.terminate()
        self._proc.wait(timeout=60)
        self.data = json.loads(self.path.read_text())

    def misses(self, log: Path, first_id: int, budget_ms: float, margin_s: float = 0.05,
               baseline_every: int = 50) -> dict:
        """Each miss (over the budget, fail-safe or late) read against the timeline, from ``margin_s``
        before its window's last sample to its decision, with what it most likely met; and the same
        reading of every ``baseline_every``-th decision in time, for comparison."""
        with sqlite3.connect(log) as db:
            rows = db.execute("SELECT decision_id, wall_time, latency_ms, fail_safe FROM decisions "
                              "WHERE decision_id >= ? ORDER BY decision_id", (first_id,)).fetchall()
        names = {tid: name for tid, name in self.names.items() if name in ("reader", "decider")}

        def reading(wall: float, latency_ms: float) -> dict:
            return read_around(self.data, wall - latency_ms / 1e3 - margin_s, wall, names)

        misses = []
        for decision_id, wall, latency_ms, fail_safe in rows:
            if latency_ms > budget_ms:
                r = reading(wall, latency_ms)
                misses.append({"decision_id": decision_id, "latency_ms": latency_ms, "fail_safe": fail_safe,
                               "met": met(r, budget_ms), **r})
        baseline = [reading(wall, latency_ms) for _, wall, latency_ms, _ in rows[::baseline_every]
                    if latency_ms <= budget_ms]
        causes = [m["met"] for m in misses]
        seen = [met(b, budget_ms) for b in baseline]
        return {"every_s": self.every_s, "margin_s": margin_s, "misses": misses,
                "misses_by_what_they_met": {c: causes.count(c) for c in sorted(set(causes))},
                "baseline_decisions": len(baseline),
                "baseline_by_what_they_met": {c: seen.count(c) for c in sorted(set(seen))}}


def met(reading: dict, budget_ms: float, waited_ms: float = 5.0, others_ms: float = 20.0,
        paused_ms: float = 20.0) -> str:
    """What a reading of the timeline shows, in order of precedence: major page faults, time stolen by
    the host, the whole machine paused (the watcher on the other core was held up at least ``paused_ms``
    too), other work on the runtime's core (at least ``others_ms``: the CPU's clock counts in ticks),
    a decider whose own CPU time took the whole budget (a slow inference), a reader or decider that
    waited at least ``waited_ms`` for the CPU, or nothing seen."""
    if reading["major_faults"]:
        return "major page faults"
    if reading["stolen_ms"] > 0:
        return "steal"
    if reading["watcher_gap_ms"] >= paused_ms:
        return "the whole machine paused"
    if reading["others_on_cpu_ms"] >= others_ms:
        return "other work on the core"
    threads = reading["threads"]
    if threads.get("decider", {}).get("cpu_ms", 0.0) >= budget_ms:
        return "the decider's own work"
    if any(t["waited_for_cpu_ms"] >= waited_ms for t in threads.values()):
        return "waited for the CPU"
    return "nothing seen"


def resident_mb() -> float | None:
    """This process's resident memory in MB (the runtime's: the simulator is a process of its own); None off Linux."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, IndexError, ValueError):
        return None


def memory_growth(samples: list[tuple[float, float]], settle: float = 0.1, every_s: float = 30.0) -> dict:
    """Resident memory over a soak: after the first ``settle`` of it (start-up, warm-up), at the end, the
    most, the trend (least squares, MB per minute) from there on and over the last half, and the memory
    every ``every_s``.  The runtime's buffers are bounded, so once they are full the trend is flat."""
    if len(samples) < 10:
        return {}
    t, mb = np.array(samples).T
    minutes = (t - t[0]) / 60.0

    def trend(after: np.ndarray) -> float:
        return float(np.polyfit(minutes[after], mb[after], 1)[0])

    settled = t >= t[0] + settle * (t[-1] - t[0])
    second_half = t >= t[0] + 0.5 * (t[-1] - t[0])
    return {"settled_mb": float(mb[settled][0]), "end_mb": float(mb[-1]), "max_mb": float(mb.max()),
            "growth_mb": float(mb[-1] - mb[settled][0]), "trend_mb_per_min": trend(settled),
            "second_half_trend_mb_per_min": trend(second_half),
            "every_s": every_s, "mb": [round(float(v), 2) for v in np.interp(np.arange(t[0], t[-1], every_s), t, mb)]}


def print_memory(rss: dict) -> None:
    if rss:
        print(f"  resident memory: {rss['settled_mb']:.1f} MB once settled, {rss['end_mb']:.1f} MB at the end "
              f"(most {rss['max_mb']:.1f}), trend {rss['trend_mb_per_min']:+.3f} MB per minute, "
              f"{rss['second_half_trend_mb_per_min']:+.3f} over the second half")


def session(bundle: Path, run: Path, seconds: float, rate: str, budget_ms: float | None, queue: int,
            log: Path, cores: list[int], realtime_priority: int = 0, faults: tuple[str, ...] = (),
            http: str | None = None, prepare: Callable[[Runtime], None] | None = None) -> tuple[dict, dict, int]:
    """The simulator in its own process (its own core, as a device would be); the runtime here.

    ``faults`` are the simulator's fault options (``--late 0.01`` ...); ``http`` the status page's
    address (None: none); ``prepare(runtime)`` runs before the stream starts."""
    sim, port = start_simulator(run, seconds, rate, cores, faults)
    runtime = Runtime(bundle, RuntimeSettings(port=port, log_path=str(log), http=http, budget_ms=budget_ms,
                                              queue_size=queue, realtime_priority=realtime_priority))
    if prepare is not None:
        prepare(runtime)
    first = runtime._next_id
    cpu0 = _cpu_seconds()
    try:
        summary = runtime.run(seconds + 2.0)  # the stream starts once the runtime has said HELLO
    finally:
        runtime.close()
    summary["cpu_s"] = _cpu_seconds() - cpu0   # every thread of the runtime: reader, decider, backend, log
    return summary, simulator_stats(sim), first


def start_simulator(run: Path, seconds: float, rate: str, cores: list[int],
                    faults: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """``drsn-edge simulate`` streaming the run's held-out records on a pty of its own, on the last of ``cores``
    (where there are two or more), once the gateway has said HELLO; the process and its pty."""
    sim = subprocess.Popen([sys.executable, "-m", "edge.cli", "simulate", "--source", "cwru", "--held-out", str(run),
                            "--rate", rate, "--loop",
                            "--start-on-hello", "--duration", str(seconds), *faults],
                           stdout=subprocess.PIPE, text=True,
                           preexec_fn=(lambda: os.sched_setaffinity(0, {cores[-1]})) if len(cores) > 1 else None)
    return sim, sim.stdout.readline().rsplit(" ", 1)[1].strip()


def simulator_stats(sim: subprocess.Popen) -> dict:
    """What the simulator says of its stream when it ends (frames generated, sent late ...)."""
    out, _ = sim.communicate(timeout=60)
    return json.loads(out.strip().splitlines()[-1].removeprefix("simulate: "))


def _max_rate(args: argparse.Namespace, config: dict, source, tmp: Path, cores: list[int]) -> dict:
    """Part 2: the stream at ``--multiple`` times real time, with a budget too large to shed anything.
    Back to back the code stays warm: the same work with no idle gaps between frames."""
    with Sampler(resident_mb, 1.0) as memory:
        fast, _, _ = session(args.bundle, args.run, args.max_rate_seconds, f"x{args.multiple:g}", 1e6, 1024,
                             tmp / "fast.db", cores, args.realtime_priority)
    f = fast["counters"]
    window_rate = source.hello.rate_hz / (config["preprocessing"]["window"] // 2)
    shed = f["deadline_fail_safe"] + f["overload_fail_safe"]
    sustained = (f["decisions"] - shed) / args.max_rate_seconds  # decided while the stream ran
    return {"seconds": fast["seconds"], "streamed_multiple": args.multiple, "decisions_per_s": sustained,
            **cost(fast), "shed": shed, "lost_frames": f["decoder_lost_frames"], "real_windows_per_s": window_rate,
            "multiple_of_real_time": sustained / window_rate, "kept_up": shed == 0,
            "resident_memory": memory_growth(memory.samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("dist/drsn-openvino-int8"))
    parser.add_argument("--run", type=Path, default=Path("runs/drsn"))
    parser.add_argument("--seconds", type=positive_float, default=600.0, help="real-rate soak length (default 600)")
    parser.add_argument("--max-rate-seconds", type=non_negative_float, default=20.0,
                        help="part 2's length (default 20; 0 leaves part 2 out)")
    parser.add_argument("--multiple", type=positive_float, default=20.0,
                        help="part 2 streams this many times real time")
    parser.add_argument("--realtime-priority", type=priority_arg, default=0,
                        help=f"SCHED_FIFO priority of the runtime's reader and decider (the installed service "
                             f"uses {DEFAULT_SERVICE_PRIORITY}; default 0: ordinary scheduling)")
    parser.add_argument("--late", type=probability, default=0.0, metavar="P",
                        help="real-rate part: the simulator holds a frame back --late-ms with this probability, "
                             "then sends the frames behind it in a burst (default 0: on schedule)")
    parser.add_argument("--late-ms", type=float, default=30.0, metavar="MS", help="how late such a frame is (30)")
    parser.add_argument("--trace", action="store_true",
                        help="watch the runtime's threads and core from the simulator's core (proc_timeline.py, "
                             "every 20 ms) and read each miss of the real-rate part against it")
    parser.add_argument("--keep-log", type=Path, default=None, metavar="DB",
                        help="keep the real-rate part's decision log here (read it with `drsn-edge decisions`), "
                             "and with --trace the timeline beside it (DB's name with .timeline.json)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "runtime_soak.json",
                        help="where the figures go (default benchmarks/results/runtime_soak.json)")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cores[0]})  # the runtime: one core
    run = read_run_files(args.run)  # no torch here: the runtime's memory is a gateway's
    config = run["config.json"]
    source = held_out_records(run)
    tmp = Path(tempfile.mkdtemp(prefix="drsn-soak-"))
    faults = ("--late", str(args.late), "--late-ms", str(args.late_ms)) if args.late else ()
    timeline = Timeline(cores[0], cores[-1], tmp / "timeline.json") if args.trace else contextlib.nullcontext()
    with StealClock(cores[0]) as steal, Sampler(resident_mb, 1.0) as memory, timeline:
        soak, sim, first = session(args.bundle, args.run, args.seconds, "realtime", None, 64, tmp / "soak.db", cores,
                                   args.realtime_priority, faults)
    c, stages, soak_cost = soak["counters"], soak["stages_s"], cost(soak)
    score = score_vibration(tmp / "soak.db", source.truth, since_id=first)  # first lap only is aligned to truth
    parts = where_time_went(tmp / "soak.db", first, soak["budget_ms"])
    host = steal.attribute(tmp / "soak.db", first, soak["budget_ms"])
    traced = timeline.misses(tmp / "soak.db", first, soak["budget_ms"]) if args.trace else None
    if args.keep_log:
        with sqlite3.connect(tmp / "soak.db") as db, sqlite3.connect(args.keep_log) as kept:
            db.backup(kept)   # one file, the write-ahead log folded in
        if args.trace:
            shutil.copy(tmp / "timeline.json", args.keep_log.with_suffix(".timeline.json"))
    max_rate = _max_rate(args, config, source, tmp, cores) if args.max_rate_seconds else None
    shutil.rmtree(tmp, ignore_errors=True)  # both logs are read: a long soak leaves tens of MB
    doc = {
        "benchmark": "runtime_soak", "bundle": str(args.bundle), "date": time.strftime("%Y-%m-%d"), "cores": 1,
        "realtime_priority": soak["thread_priority"],
        "real_rate": {"seconds": soak["seconds"], "budget_ms": soak["budget_ms"], "latency": soak["latency"],
                      "decisions": c["decisions"], "deadline_fail_safe": c["deadline_fail_safe"],
                      "late_decisions": c["late_decisions"], "overload_fail_safe": c["overload_fail_safe"],
                      "frames_streamed": sim["frames_generated"], "frames_received": c["data_frames"],
                      "frames_sent_late": sim["frames_late"], "late_ms": args.late_ms if args.late else None,
                      "lost_frames": c["decoder_lost_frames"], "stage_seconds": stages, "cpu_seconds": soak["cpu_s"],
                      **soak_cost, "target_overhead": 0.10,
                      "paced_sleeps": c["paced_sleeps"], "pacing_overruns": c["pacing_overruns"],
                      "pacing_late_wakeups": c["pacing_late_wakeups"],
                      "latency_parts": parts, "hypervisor_steal": host, "misses_traced": traced,
                      "resident_memory": memory_growth(memory.samples)},
        "max_rate": max_rate,
    }
    out = args.out
    write_results(doc, out)
    lat = soak["latency"]
    print(f"real rate, {soak['seconds']:.0f} s, {c['decisions']} decisions: p50 {lat['p50_ms']:.2f} ms, "
          f"p99 {lat['p99_ms']:.2f} ms, p99.9 {lat['p99_9_ms']:.2f} ms, max {lat['max_ms']:.2f} ms "
          f"(budget {soak['budget_ms']:g} ms); misses: {c['deadline_fail_safe']} fail-safe, "
          f"{c['late_decisions']} late; frames {c['data_frames']}/{sim['frames_generated']}, "
          f"lost {c['decoder_lost_frames']}, {sim['frames_late']} sent late by the device; "
          f"paced sleeps {c['paced_sleeps']}, {c['pacing_overruns']} overruns, "
          f"{c['pacing_late_wakeups']} late wake-ups")
    for group in ("decided", "late_parts"):
        if group in parts:
            print(f"  {'every decision' if group == 'decided' else 'late decisions'}: " + ", ".join(
                f"{name} p50 {v['p50_ms']:.2f} / p99 {v['p99_ms']:.2f} / max {v['max_ms']:.2f} ms"
                for name, v in parts[group].items()))
    if parts.get("late"):
        print(f"  largest part of each late decision: {parts['late_largest_part']}")
    if host:
        print(f"  the host stole {host['stolen_s']:.2f} s from the runtime's core; misses: {host['misses_near_steal']} "
              f"of {host['decisions_near_steal']} decisions within {host['margin_s']:g} s of a steal, "
              f"{host['misses_clear_of_steal']} of {host['decisions_clear_of_steal']} clear of any")
    if traced is not None:
        print(f"  misses read against the runtime's threads and core: {traced['misses_by_what_they_met'] or 'none'}; "
              f"{traced['baseline_decisions']} decisions in time: {traced['baseline_by_what_they_met']}")
        for m in traced["misses"]:
            threads = ", ".join(f"{name} {t['cpu_ms']:.1f} ms CPU, waited {t['waited_for_cpu_ms']:.1f}"
                                for name, t in m["threads"].items())
            print(f"    decision {m['decision_id']} ({m['latency_ms']:.1f} ms{', fail-safe: ' + m['fail_safe'] if m['fail_safe'] else ''}):"
                  f" {m['met']}; {m['major_faults']} major faults, others on the core {m['others_on_cpu_ms']:.0f} ms,"
                  f" stolen {m['stolen_ms']:.0f} ms, the watcher held up {m['watcher_gap_ms']:.0f} ms; {threads}")
    print_memory(doc["real_rate"]["resident_memory"])
    print(f"runtime overhead: {100 * soak_cost['overhead_fraction_of_inference']:.1f}% of inference time by stage "
          f"clocks, {100 * soak_cost['overhead_cpu_fraction_of_inference']:.1f}% by CPU time (target <= 10%); "
          f"{soak_cost['cpu_ms_per_decision']:.3f} ms CPU per decision (reader thread "
          f"{soak_cost.get('reader_cpu_ms_per_decision', float('nan')):.3f}, decider thread "
          f"{soak_cost.get('decider_cpu_ms_per_decision', float('nan')):.3f})")
    if max_rate:
        print(f"streamed at {args.multiple:g}x real time: {max_rate['decisions_per_s']:.0f} windows/s decided = "
              f"{max_rate['multiple_of_real_time']:.1f}x real time on one core, {max_rate['shed']} shed; overhead "
              f"back to back {100 * max_rate['overhead_fraction_of_inference']:.1f}% by stage clocks, "
              f"{100 * max_rate['overhead_cpu_fraction_of_inference']:.1f}% by CPU time")
        print_memory(max_rate["resident_memory"])
    if score["accuracy"] is not None:
        print(f"live accuracy {100 * score['accuracy']:.2f}% on {score['scored']} held-out windows (first lap)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
