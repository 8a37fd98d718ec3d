"""What reading the status page costs the decisions, side by side at the real rate.

The same runtime, bundle and stream as ``runtime_soak.py``, with its status page on, in
sessions that take turns: nobody reading the page, then a reader fetching it every
``--every`` seconds from a process of its own (a browser tab refreshes it every 2 s;
a dashboard or several tabs read it more often), or the other way round, every other
round.  The page's latency table covers the last 100,000 decisions; a gateway fills that
window after 2.3 hours at the real rate, so every session starts with it full (of 2 ms
latencies, which the table then shows; the decisions are the session's own).  Each arm's
latencies are pooled from its sessions' decision logs and compared as counts and ratios.
Writes benchmarks/results/runtime_status_page_ab.json.

    python benchmarks/runtime_status_page_ab.py --bundle dist/drsn-openvino-int8 --run runs/drsn --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_realtime_ab import _latencies, add_session_arguments, arm_line, arm_row, session_row  # noqa: E402 - shared
from runtime_soak import session  # noqa: E402 - the soak's session, shared
from results_file import write_results  # noqa: E402

from edge.cli.common import positive_float  # noqa: E402
from edge.runtime.metrics import LATENCY_WINDOW  # noqa: E402

HERE = Path(__file__).resolve().parent
ADDRESS = "127.0.0.1:9118"
READER = """
import sys, time, urllib.request
url, every = sys.argv[1], float(sys.argv[2])
while True:
    try:
        urllib.request.urlopen(url, timeout=5).read()
    except OSError:
        pass  # not listening yet, or already closed
    time.sleep(every)
"""


def _fill_the_window(runtime) -> None:
    """The page's latency window as a gateway's after 2.3 hours at the real rate: full."""
    runtime.metrics.observe([{}] * LATENCY_WINDOW, 2.0)
    runtime.metrics.recent.clear()  # the table of latest decisions shows the session's own


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_session_arguments(parser, seconds=60.0, rounds=2)
    parser.add_argument("--every", type=positive_float, default=0.5,
                        help="seconds between the reader's fetches of the page (default 0.5)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "runtime_status_page_ab.json")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})  # the runtime: one core; the simulator and the reader the other
    tmp = Path(tempfile.mkdtemp(prefix="drsn-page-ab-"))
    arms = ("unread", "read")
    pooled: dict[str, list[np.ndarray]] = {name: [] for name in arms}
    sessions, budget_ms = [], None
    for k in range(args.rounds):
        for name in (arms if k % 2 == 0 else arms[::-1]):
            log = tmp / f"{name}-{k}.db"
            reader = subprocess.Popen([sys.executable, "-c", READER, f"http://{ADDRESS}/", str(args.every)],
                                      preexec_fn=lambda: os.sched_setaffinity(0, {cores[-1]})) \
                if name == "read" else None
            try:
                summary, sim, first = session(args.bundle, args.run, args.seconds, "realtime", None, 64, log, cores,
                                              http=ADDRESS, prepare=_fill_the_window)
            finally:
                if reader is not None:
                    reader.kill()
                    reader.wait()
            budget_ms = summary["budget_ms"]
            latencies = _latencies(log, first)
            pooled[name].append(latencies)
            row = session_row(name, k, summary, sim, latencies, budget_ms)
            sessions.append(row)
            print(f"round {k} {name:7s}: {row['n']} decisions, p99 {row['p99_ms']:.2f} ms, p99.9 "
                  f"{row['p99_9_ms']:.2f} ms, max {row['max_ms']:.2f} ms; over the budget {row['over_budget']}; "
                  f"misses {row['deadline_fail_safe']} fail-safe + {row['late_decisions']} late", flush=True)
    arm_rows = {name: arm_row([s for s in sessions if s["arm"] == name], pooled[name], budget_ms) for name in arms}
    u, r = arm_rows["unread"], arm_rows["read"]
    doc = {"benchmark": "runtime_status_page_ab", "bundle": args.bundle.name, "date": time.strftime("%Y-%m-%d"),
           "cores": 1, "seconds_per_session": args.seconds, "rounds": args.rounds, "fetch_every_s": args.every,
           "latency_window": "full (100,000 decisions) from the start of every session",
           "budget_ms": budget_ms, "arms": arm_rows, "sessions": sessions,
           "ratio_read_to_unread": {k: r[k] / u[k] for k in ("p50_ms", "p99_ms", "p99_9_ms", "max_ms")}}
    write_results(doc, args.out)
    for name, a in arm_rows.items():
        print(arm_line(name, a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
