"""Build side, smaller image models: `prune` and `distill` (may import torch, lazily)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.cli.common import (add_run_output, add_training_options, non_negative_float, positive_int,
                             refuse_existing_run, share)
from edge.errors import DrsnEdgeError

EPILOG_PRUNE = """\
examples:
  drsn-edge prune --run runs/castings --method l1 --rounds 3 --rate 0.3 --out runs/castings-l1
  drsn-edge prune --run runs/castings --method asfp --rate 0.2 --epochs 20 --out runs/castings-asfp20

The pruned network is physically smaller (fewer filters in real convolutions, residual
paths cut consistently), so FLOPs and latency fall; every round and its validation
accuracy before and after fine-tuning is in the new run's metrics.json.  Score it with
`drsn-edge evaluate`, build it with build.py like any run.
"""

EPILOG_DISTILL = """\
examples:
  drsn-edge distill --teacher runs/neu-sarsn --student resnet18 --out runs/neu-student
  drsn-edge distill --teacher runs/neu-sarsn --student resnet18 --width 32 --epochs 40 --out runs/neu-small

The student learns from the labels and from the teacher's relations between images
(relational knowledge distillation: pairwise distances and triplet angles of the
pooled features), on the teacher run's own split.  To learn the softened outputs of
several runs instead (an ensemble of seeds), use `drsn-edge train --teacher RUN ...`.
"""


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune an image run's filters (L1 rounds or ASFP) and fine-tune it",
                       description="Structured filter pruning of a trained image model, with fine-tuning.",
                       epilog=EPILOG_PRUNE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="trained image run")
    add_run_output(p, "runs/NAME-l1")
    p.add_argument("--method", default="l1", choices=["l1", "asfp"],
                   help="l1: rounds of L1-norm pruning with fine-tuning between; asfp: asymptotic soft pruning")
    p.add_argument("--rounds", type=positive_int, default=None, help="l1 rounds (default 3); asfp has none")
    p.add_argument("--rate", type=share, default=0.3, help="share of filters removed per round (default 0.3)")
    p.add_argument("--epochs", type=positive_int, default=10, help="fine-tuning epochs per round (default 10)")
    p.add_argument("--data", type=Path, default=None, help="the run's image folder, if it moved")
    add_training_options(p)
    p.set_defaults(func=_cmd_prune)


def _cmd_prune(args: argparse.Namespace) -> int:
    from edge.train.compression import prune_run

    if args.method == "asfp" and args.rounds is not None:
        raise DrsnEdgeError("--rounds counts L1 pruning rounds; ASFP prunes softly, epoch by epoch, to --rate: "
                            "leave --rounds out, or use --method l1")
    refuse_existing_run(args.out, args.overwrite)
    prune_run(args.run, args.out, args.method, args.rounds or 3, args.rate, args.epochs, args.data, args.threads,
              args.seed, args.quiet, args.device)
    return 0


def _add_distill(sub: argparse._SubParsersAction) -> None:
    from edge.model_names import IMAGE_MODELS

    p = sub.add_parser("distill", help="train a small image model from a teacher run (relational distillation)",
                       description="Relational knowledge distillation (distance and angle losses) into a student.",
                       epilog=EPILOG_DISTILL, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True, help="trained image run to learn from")
    p.add_argument("--student", default="resnet18", choices=sorted(IMAGE_MODELS), help="student network")
    p.add_argument("--width", type=positive_int, default=None, help="student's first-stage width (default 64)")
    p.add_argument("--depth", type=positive_int, default=None, help="student's blocks per stage (default 2)")
    p.add_argument("--epochs", type=positive_int, default=30)
    p.add_argument("--distance-weight", type=non_negative_float, default=25.0, help="RKD distance loss weight (default 25)")
    p.add_argument("--angle-weight", type=non_negative_float, default=50.0, help="RKD angle loss weight (default 50)")
    add_run_output(p, "runs/NAME-student")
    p.add_argument("--data", type=Path, default=None, help="the teacher's image folder, if it moved")
    add_training_options(p)
    p.set_defaults(func=_cmd_distill)


def _cmd_distill(args: argparse.Namespace) -> int:
    from edge.train.compression import distill_run

    refuse_existing_run(args.out, args.overwrite)
    distill_run(args.teacher, args.out, args.student, args.width, args.depth, args.epochs, args.distance_weight,
                args.angle_weight, args.data, args.threads, args.seed, args.quiet, args.device)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_prune(sub)
    _add_distill(sub)
