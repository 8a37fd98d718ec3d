"""Build side: `ensemble`, several trained runs of one task averaged into one run (may import torch, lazily)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.cli.common import add_run_output, refuse_existing_run, thread_count

EPILOG = """\
examples:
  drsn-edge ensemble --runs runs/castings-s0 runs/castings-s1 runs/castings-s2 runs/castings-s3 --out runs/castings-x4
  drsn-edge evaluate --run runs/castings-x4
  python build.py --run runs/castings-x4 --target openvino --precision int8 --out dist/castings-x4-ov-int8

The new run's network outputs the mean of its members' class probabilities: runs of
one recipe trained from different seeds err on different inputs, and their average
errs less often than one of them.  It costs one inference per member on the gateway;
time it with benchmarks/linescan_throughput.py (images) or runtime_soak.py (vibration)
before choosing it.  The members must share task, classes, preprocessing and split
(train them with one --split-seed); each member's validation score and the average's
are printed and kept in the run's metrics.json.  Nothing is trained.
"""


def _add_ensemble(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ensemble", help="average trained runs of one task into one run (one inference per member)",
                       description="Pack trained runs of one task and split as one run whose network outputs "
                                   "the mean of their softmax outputs.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, nargs="+", required=True, metavar="RUN",
                   help="two or more trained runs of one task, preprocessing and split")
    add_run_output(p, "runs/NAME-x4")
    p.add_argument("--data", type=Path, default=None, help="the runs' data folder, if it moved")
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads for torch (default: all)")
    p.add_argument("-q", "--quiet", action="store_true", help="no messages")
    p.set_defaults(func=_cmd_ensemble)


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from edge.train.ensemble import ensemble_runs

    refuse_existing_run(args.out, args.overwrite)
    ensemble_runs(args.runs, args.out, args.data, args.threads, args.quiet)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_ensemble(sub)
