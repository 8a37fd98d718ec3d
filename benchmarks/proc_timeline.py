"""A timeline of one process's threads and one CPU, read from /proc by a process of its own.

Why a process of its own: a sampler thread inside the runtime would need the same
interpreter lock and the same core as the threads it watches, and would stall with
them.  Every ``--every`` seconds it records, for each thread of ``--pid``: CPU time and
time spent runnable but waiting for a CPU (``schedstat``, in nanoseconds), and major
and minor page faults (``stat``); and for ``--cpu``: busy and stolen time
(``/proc/stat``, in clock ticks).  On SIGTERM or SIGINT it writes the samples as JSON
to ``--out`` and ends.  Linux only.  ``runtime_soak.py --trace`` runs it beside the
runtime and reads each deadline miss against it (:func:`read_around`).

    python benchmarks/proc_timeline.py --pid 1234 --cpu 0 --every 0.02 --out timeline.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

#: What each thread row holds, in order.
THREAD_FIELDS = ("cpu_ns", "run_delay_ns", "major_faults", "minor_faults")


def thread_sample(pid: int) -> dict[int, list[int]]:
    """{thread id: [cpu_ns, run_delay_ns, major_faults, minor_faults]} of the process now; threads that
    end while being read are left out."""
    rows = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                cpu_ns, delay_ns = (int(v) for v in fh.read().split()[:2])
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()   # after the command name, which may hold spaces
        except (FileNotFoundError, ProcessLookupError):
            continue
        rows[int(tid)] = [cpu_ns, delay_ns, int(fields[9]), int(fields[7])]   # majflt, minflt
    return rows


def cpu_ticks(label: str) -> list[int] | None:
    """The clock-tick counters of one line of /proc/stat ("cpu3"; "cpu": all CPUs together): user, nice,
    system, idle, iowait, irq, softirq, steal, ...; None where there is no such line (not Linux)."""
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                fields = line.split()
                if fields and fields[0] == label:
                    return [int(x) for x in fields[1:]]
    except OSError:
        pass
    return None


def cpu_sample(cpu: int) -> tuple[int, int]:
    """(busy, stolen) clock ticks of one CPU so far."""
    v = cpu_ticks(f"cpu{cpu}")
    if v is None:
        raise ValueError(f"no cpu{cpu} in /proc/stat")
    idle = v[3] + v[4]               # idle, iowait
    steal = v[7] if len(v) > 7 else 0
    return sum(v[:8]) - idle - steal, steal


def record(pid: int, cpu: int, every_s: float, out: Path) -> int:
    samples: list[dict] = []
    done = False

    def stop(*_) -> None:
        nonlocal done
        done = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    next_at = time.monotonic()
    while not done:
        try:
            threads = thread_sample(pid)
        except FileNotFoundError:       # the process ended
            break
        busy, steal = cpu_sample(cpu)
        samples.append({"t": time.time(), "busy": busy, "steal": steal, "threads": threads})
        next_at += every_s
        time.sleep(max(0.0, next_at - time.monotonic()))
    out.write_text(json.dumps({"pid": pid, "cpu": cpu, "every_s": every_s, "tick_s": 1 / os.sysconf("SC_CLK_TCK"),
                               "thread_fields": THREAD_FIELDS, "samples": samples}))
    return 0


def read_around(timeline: dict, start: float, end: float, names: dict[int, str]) -> dict:
    """What the process's threads and the CPU did between wall times ``start`` and ``end`` (the samples
    around them): per named thread its CPU, its wait for a CPU and its page faults; the CPU's busy time
    beyond the process's own, the stolen time, and how much later than planned the watcher's own
    slowest sample came (on its own core), in milliseconds."""
    samples = timeline["samples"]
    t = np.array([s["t"] for s in samples])
    i = max(0, int(np.searchsorted(t, start, side="right")) - 1)
    j = min(len(samples) - 1, int(np.searchsorted(t, end, side="left")))
    first, last = samples[i], samples[j]
    tick_ms = 1e3 * timeline["tick_s"]
    out: dict = {"from": first["t"], "to": last["t"], "threads": {}}
    own_ns = own_major = 0
    for tid, after in last["threads"].items():
        before = first["threads"].get(tid, [0, 0, 0, 0])
        cpu_ns, delay_ns, major, minor = (a - b for a, b in zip(after, before))
        own_ns += cpu_ns
        own_major += major
        name = names.get(int(tid))
        if name:
            out["threads"][name] = {"cpu_ms": cpu_ns / 1e6, "waited_for_cpu_ms": delay_ns / 1e6,
                                    "major_faults": major, "minor_faults": minor}
    out["major_faults"] = own_major
    out["cpu_busy_ms"] = (last["busy"] - first["busy"]) * tick_ms
    out["others_on_cpu_ms"] = max(0.0, out["cpu_busy_ms"] - own_ns / 1e6)
    out["stolen_ms"] = (last["steal"] - first["steal"]) * tick_ms
    # The watcher runs on another core: a gap in its own samples there means that core stopped too.
    out["watcher_gap_ms"] = 1e3 * (float(np.diff(t[i:j + 1]).max()) - timeline["every_s"]) if j > i else 0.0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pid", type=int, required=True, help="the process to watch")
    parser.add_argument("--cpu", type=int, required=True, help="the CPU it runs on")
    parser.add_argument("--every", type=float, default=0.02, help="seconds between samples (0.02)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON written at the end")
    args = parser.parse_args()
    return record(args.pid, args.cpu, args.every, args.out)


if __name__ == "__main__":
    sys.exit(main())
