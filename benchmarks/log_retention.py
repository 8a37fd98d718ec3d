"""What bounding the decision log costs a line-scan runtime: unbounded against trimmed, side by side.

The line-scan runtime logs a row per patch (20 per tile, about 780 a second at the
nominal 1,250 lines/s), the heaviest load the log sees.  Each round runs the full
runtime on the belt of real castings patches twice, through a real pty: once with
an unbounded log, once with a bound so small (--bound-mb, default 1 MB) that the log
trims its oldest rows throughout the run.  The two alternate, in turn first, so the
machine's drift falls on both.  Reports latency, deadline misses, rows written,
retired and not written, and the log file's size.  Writes
benchmarks/results/log_retention.json.

    python benchmarks/log_retention.py --bundle dist/castings-hp-l1-ov-int8 --seconds 30 --rounds 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from linescan_throughput import measure  # noqa: E402
from results_file import write_results  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="an image bundle for 32 px castings patches")
    parser.add_argument("--data", type=Path, default=None, help="data root (default ../shared/data)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs (default 3)")
    parser.add_argument("--multiple", type=float, default=1.0, help="line rate, x nominal (default 1)")
    parser.add_argument("--bound-mb", type=float, default=1.0, help="the trimmed log's bound (default 1 MB)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "log_retention.json")
    args = parser.parse_args()

    from edge.data.catalog import default_data_root

    data = args.data or default_data_root()
    runs = []
    for k in range(args.rounds):
        for bound in ((0.0, args.bound_mb) if k % 2 == 0 else (args.bound_mb, 0.0)):
            r = measure(args.bundle, data, args.seconds, args.multiple, 1, log_max_mb=bound)
            r["log_max_mb"] = bound
            runs.append(r)
            lat, log = r["latency"], r["log"]
            print(f"round {k + 1}, log {'bounded at %g MB' % bound if bound else 'unbounded'}: "
                  f"{r['decisions']} decisions, p50 {lat['p50_ms']:.2f} / p99 {lat['p99_ms']:.2f} / "
                  f"max {lat['max_ms']:.2f} ms, fail-safe {r['deadline_fail_safe'] + r['overload_fail_safe']}, "
                  f"late {r['late_decisions']}; inference {1e3 * r['stage_seconds']['inference'] / r['decisions']:.3f} "
                  f"ms per patch; "
                  f"log {log['written']} written, {log['retired']} retired, {log['failed']} failed, "
                  f"file {log['file_bytes'] / 1e6:.2f} MB", flush=True)
    doc = {"benchmark": "log_retention", "date": time.strftime("%Y-%m-%d"), "bundle": args.bundle,
           "multiple_of_nominal": args.multiple, "seconds": args.seconds, "bound_mb": args.bound_mb, "runs": runs}
    write_results(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
