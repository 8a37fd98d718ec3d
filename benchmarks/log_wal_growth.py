"""How large the decision log's write-ahead log grows at a given commit rate, with and without its limit.

SQLite starts its write-ahead log over only after a checkpoint has copied every page in
it; the decision log checkpoints in a thread of its own, so at hundreds of commits a
second new pages arrive during every checkpoint and, left alone, the write-ahead log
grows by a page per commit.  Past its limit (``--limits-mb``) the writer completes a checkpoint
itself between two commits (see edge/runtime/decision_log.py).  This commits rows
straight to a DecisionLog, as the runtime does, at ``--rate`` commits a second of
``--rows`` rows each (1: vibration windows; 20: a 640 px line-scan tile), for each
limit given (a limit far above what the run writes shows the log left alone), and
reports the write-ahead log's size every 10 s, the writer's own checkpoints and what
each commit took.  Writes benchmarks/results/log_wal_growth.json.

    python benchmarks/log_wal_growth.py --rate 586 --rows 1 --seconds 40 --limits-mb 16,100000
    python benchmarks/log_wal_growth.py --rate 78 --rows 20 --seconds 40 --limits-mb 16,100000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.cli.common import float_list
from edge.runtime.decision_log import DecisionLog, DecisionRow
from edge.runtime.metrics import latency_percentiles
from results_file import write_results

HERE = Path(__file__).resolve().parent


def commit_for(seconds: float, rate: float, rows: int, limit_bytes: int) -> dict:
    """Commit ``rate`` units of ``rows`` rows a second for ``seconds`` into a fresh log; what its files did."""
    with tempfile.TemporaryDirectory(prefix="drsn-wal-") as tmp:  # a log left alone takes hundreds of MB
        path = Path(tmp) / "decisions.db"
        wal = path.with_name(path.name + "-wal")
        log = DecisionLog(path, wal_limit_bytes=limit_bytes)
        commit_ms, sizes = [], []
        start, units, next_id = time.monotonic(), 0, 1
        while time.monotonic() - start < seconds:
            unit = [DecisionRow(next_id + k, time.time(), "linescan", next_id, next_id + 31, 0, k, "class_1",
                                [0.1, 0.9], True, None, 1.0, next_id + 500, "0" * 64, 0.1, 0.5) for k in range(rows)]
            t0 = time.perf_counter()
            log.append(unit)
            commit_ms.append((time.perf_counter() - t0) * 1e3)
            next_id, units = next_id + rows, units + 1
            if units % max(1, int(10 * rate)) == 0:
                sizes.append(round(wal.stat().st_size / 1e6, 2))
            time.sleep(max(0.0, start + units / rate - time.monotonic()))
        log.close()
        database_mb = round(path.stat().st_size / 1e6, 2)
    return {"wal_limit_mb": limit_bytes / 1e6, "commits": units, "rows": log.written,
            "wal_mb_every_10_s": sizes, "wal_catch_ups": log.wal_catch_ups,
            "database_mb": database_mb, "commit": latency_percentiles(np.array(commit_ms))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=586.0, help="commits a second (default 586)")
    parser.add_argument("--rows", type=int, default=1, help="rows a commit (default 1)")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each run (default 40)")
    parser.add_argument("--limits-mb", type=float_list, default="16,100000",
                        help="write-ahead log limits to run with, comma-separated (default 16,100000)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "log_wal_growth.json")
    args = parser.parse_args()
    runs = []
    for limit in args.limits_mb:
        r = commit_for(args.seconds, args.rate, args.rows, int(limit * 1e6))
        runs.append(r)
        print(f"limit {limit:g} MB: {r['commits']} commits of {args.rows} row(s); write-ahead log every 10 s "
              f"{r['wal_mb_every_10_s']} MB; the writer completed {r['wal_catch_ups']} checkpoint(s); commit p50 "
              f"{r['commit']['p50_ms']:.3f} / p99 {r['commit']['p99_ms']:.3f} / max {r['commit']['max_ms']:.2f} ms",
              flush=True)
    doc = {"benchmark": "log_wal_growth", "date": time.strftime("%Y-%m-%d"), "rate": args.rate, "rows": args.rows,
           "seconds": args.seconds, "runs": runs}
    write_results(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
