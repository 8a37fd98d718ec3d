"""Real-time priority against ordinary scheduling, side by side at the real rate.

The same runtime, bundle and stream as ``runtime_soak.py``, in sessions that take turns:
ordinary scheduling, then the reader and decider under SCHED_FIFO (or the other way
round, every other round, so a drift in the machine's load is shared by both arms).
Each arm's latencies are pooled from its sessions' decision logs; the tails and the
deadline misses are compared as counts and ratios.  ``--competing-load N`` runs N
busy processes at ordinary priority on the runtime's core during every session, as
other software on a busy gateway would.  Writes
benchmarks/results/runtime_realtime_ab.json (``runtime_realtime_ab_load.json`` with a
competing load).

    python benchmarks/runtime_realtime_ab.py --rounds 3 --seconds 150
    python benchmarks/runtime_realtime_ab.py --rounds 2 --seconds 120 --competing-load 1
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_soak import session  # noqa: E402 - the soak's session, shared
from results_file import write_results  # noqa: E402

from calibration.latency import percentiles  # noqa: E402
from edge.cli.common import positive_int, realtime_priority as priority_arg  # noqa: E402
from edge.runtime.realtime import DEFAULT_SERVICE_PRIORITY  # noqa: E402

HERE = Path(__file__).resolve().parent


def _latencies(log: Path, first_id: int) -> np.ndarray:
    """Latencies (ms) of the decisions a session made (fail-safe ones included: they count as decided)."""
    with sqlite3.connect(log) as db:
        rows = db.execute("SELECT latency_ms FROM decisions WHERE decision_id >= ?", (first_id,)).fetchall()
    return np.array([r[0] for r in rows], dtype=float)


def _competing_load(count: int, core: int) -> list[subprocess.Popen]:
    """``count`` processes that spin on ``core`` at ordinary priority until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             preexec_fn=lambda: os.sched_setaffinity(0, {core})) for _ in range(count)]


def _tails(latencies: np.ndarray, budget_ms: float) -> dict:
    """The latency percentiles (ms) of a session or an arm, and how many exceed the budget."""
    return percentiles(latencies / 1e3) | {"over_budget": int((latencies > budget_ms).sum())}


def session_row(arm: str, round_: int, summary: dict, sim: dict, latencies: np.ndarray, budget_ms: float) -> dict:
    """One session's misses, frames and latency tails, as an A/B benchmark reports each."""
    c = summary["counters"]
    return {"arm": arm, "round": round_, "deadline_fail_safe": c["deadline_fail_safe"],
            "late_decisions": c["late_decisions"], "frames_streamed": sim["frames_generated"],
            "frames_received": c["data_frames"], **_tails(latencies, budget_ms)}


def arm_row(sessions: list[dict], latencies: list[np.ndarray], budget_ms: float) -> dict:
    """An arm's tails over its sessions' pooled latencies, and its misses summed over them."""
    row = {**_tails(np.concatenate(latencies), budget_ms),
           "deadline_fail_safe": sum(s["deadline_fail_safe"] for s in sessions),
           "late_decisions": sum(s["late_decisions"] for s in sessions)}
    return row | {"misses": row["deadline_fail_safe"] + row["late_decisions"]}


def arm_line(name: str, arm: dict) -> str:
    """An arm's pooled tails and misses, as each A/B benchmark prints them at the end."""
    return (f"{name:8s}: {arm['n']} decisions, p50 {arm['p50_ms']:.2f} / p99 {arm['p99_ms']:.2f} / p99.9 "
            f"{arm['p99_9_ms']:.2f} / max {arm['max_ms']:.2f} ms, misses {arm['misses']} "
            f"({arm['deadline_fail_safe']} fail-safe, {arm['late_decisions']} late)")


def add_session_arguments(parser: argparse.ArgumentParser, seconds: float, rounds: int) -> None:
    """The options every A/B benchmark at the real rate shares: the bundle, its run, and the sessions."""
    parser.add_argument("--bundle", type=Path, default=Path("dist/drsn-openvino-int8"))
    parser.add_argument("--run", type=Path, default=Path("runs/drsn"))
    parser.add_argument("--seconds", type=float, default=seconds, help=f"length of each session (default {seconds:g})")
    parser.add_argument("--rounds", type=positive_int, default=rounds, help=f"sessions per arm (default {rounds})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_session_arguments(parser, seconds=120.0, rounds=3)
    parser.add_argument("--priority", type=priority_arg, default=DEFAULT_SERVICE_PRIORITY,
                        help=f"SCHED_FIFO priority of the real-time arm (default {DEFAULT_SERVICE_PRIORITY})")
    parser.add_argument("--competing-load", type=int, default=0, metavar="N",
                        help="busy processes on the runtime's core during every session (default 0)")
    args = parser.parse_args()
    if not args.priority:
        parser.error("--priority must be a real-time priority (1-99) for the comparison")
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})  # the runtime: one core; the simulator gets the other
    tmp = Path(tempfile.mkdtemp(prefix="drsn-rt-ab-"))
    arms = {"ordinary": 0, "realtime": args.priority}
    pooled: dict[str, list[np.ndarray]] = {name: [] for name in arms}
    sessions, budget_ms = [], None
    for k in range(args.rounds):
        order = list(arms) if k % 2 == 0 else list(reversed(arms))
        for name in order:
            log = tmp / f"{name}-{k}.db"
            load = _competing_load(args.competing_load, cores[0])
            try:
                summary, sim, first = session(args.bundle, args.run, args.seconds, "realtime", None, 64, log, cores,
                                              arms[name])
            finally:
                for process in load:
                    process.kill()
                    process.wait()
            budget_ms = summary["budget_ms"]
            latencies = _latencies(log, first)
            pooled[name].append(latencies)
            row = session_row(name, k, summary, sim, latencies, budget_ms) | {
                "thread_priority": summary["thread_priority"],
                "cpu_ms_per_decision": 1e3 * summary["cpu_s"] / max(summary["counters"]["decisions"], 1)}
            sessions.append(row)
            print(f"round {k} {name:8s} priority {row['thread_priority']}: {row['n']} decisions, p99 "
                  f"{row['p99_ms']:.2f} ms, p99.9 {row['p99_9_ms']:.2f} ms, max {row['max_ms']:.2f} ms; misses "
                  f"{row['deadline_fail_safe']} fail-safe + {row['late_decisions']} late", flush=True)
    arm_rows = {}
    for name in arms:
        rows = [s for s in sessions if s["arm"] == name]
        arm_rows[name] = arm_row(rows, pooled[name], budget_ms) | {
            "cpu_ms_per_decision": float(np.mean([r["cpu_ms_per_decision"] for r in rows]))}
    o, r = arm_rows["ordinary"], arm_rows["realtime"]
    doc = {"benchmark": "runtime_realtime_ab", "bundle": str(args.bundle), "date": time.strftime("%Y-%m-%d"),
           "cores": 1, "competing_load": args.competing_load, "seconds_per_session": args.seconds, "rounds": args.rounds, "priority": args.priority,
           "budget_ms": budget_ms, "arms": arm_rows, "sessions": sessions,
           "ratio_realtime_to_ordinary": {k: r[k] / o[k] for k in ("p50_ms", "p99_ms", "p99_9_ms", "max_ms")}}
    out = HERE / "results" / ("runtime_realtime_ab_load.json" if args.competing_load else "runtime_realtime_ab.json")
    write_results(doc, out)
    for name, a in arm_rows.items():
        print(arm_line(name, a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
