"""X-ray castings: training variants chosen on validation, and whether the remaining errors are systematic.

Trains ResNet-18 (width 16, 30 epochs; or a candidate's own network) on the castings for
every candidate x seed, scores each run's validation images (balanced accuracy, the score
that chooses an epoch) and, once, its deduplicated test images.  The candidate with the best mean
validation score over the seeds is the one a user should take; the test figures are
there for the record and never choose.  Then, over all runs:

- how many test images exactly k of the runs get wrong: errors shared by every run are
  not seed or setting noise, and no retraining of the same kind fixes them;
- the mean-softmax ensemble of all runs, for the same reason.

Each candidate whose seeds share one split (``split_seed``) is also scored as the mean
softmax of its seeds, as ``drsn-edge ensemble`` packs them, on validation and on test:
whether averaging pays for its inferences is chosen on validation too.

Only the test images are shared by every run: each seed draws its own validation images,
unless a candidate fixes ``split_seed``.

Candidates are ``NAME:FIELD=VALUE,...`` over ``ImageTrainSettings``, ``size`` (the input
size in px; the 32 px patches are resized to it) and ``model`` (an image model of
``drsn-edge train --model``, default resnet18: a shrinkage network can teach a ResNet-18).
A pruned candidate names the candidate it starts from and its L1 rounds instead:
``NAME:from=OTHER,l1_rounds=N`` prunes OTHER's run of the same seed (30 % of the filters per
round, 10 epochs of fine-tuning each, as ``drsn-edge prune``), so a narrow network can be
compared with the shipped wide-then-pruned one at the same FLOPs.  ``teachers=OTHER`` distils
the runs of every seed of OTHER (named before it) into each run; give both ``split_seed=K``,
so that they share validation images.  ``teachers=A@0;B@0;C@0`` distils one seed's run of
each of several candidates (teachers of different recipes), and ``seeds=0`` trains a
candidate for those seeds only (``;`` between several), instead of ``--seeds``.
Resumable: a run directory that already holds metrics.json is reused.  ``--jobs N``
trains N seeds of a candidate at once, each in a process of its own with ``--threads``
threads (on a GPU host, several small trainings share the GPU better than one uses it).
Writes benchmarks/results/images_castings_variants.json.

    python benchmarks/images_castings_variants.py
    python benchmarks/images_castings_variants.py --candidate rot:rotations=true --seeds 0,1,2
    python benchmarks/images_castings_variants.py --candidate e90:epochs=90 --candidate e90-l1x1:from=e90,l1_rounds=1
    python benchmarks/images_castings_variants.py --candidate split0:epochs=90,split_seed=0 \\
        --candidate split0-ens:epochs=90,split_seed=0,teachers=split0
    python benchmarks/images_castings_variants.py --candidate a:epochs=90,split_seed=0,seeds=0 \\
        --candidate b:epochs=90,split_seed=0,seeds=0,blur=1.0 \\
        --candidate "ab:epochs=90,split_seed=0,teachers=a@0;b@0" --seeds 0,1,2,3
    python benchmarks/images_castings_variants.py --candidate d:epochs=90,split_seed=0,model=drsn2d \\
        --candidate d-ens:epochs=90,split_seed=0,teachers=d
    python benchmarks/images_castings_variants.py --device cuda --jobs 8 --threads 2 --candidate e90:epochs=90 \\
        --seeds 0,1,2,3,4,5,6,7
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from images_accuracy import add_training_arguments  # noqa: E402
from robustness_nested import parse_candidate  # noqa: E402
from edge.cli.common import int_list, positive_int  # noqa: E402
from results_file import write_results  # noqa: E402

DEFAULT_MODEL = "resnet18"  # a candidate's network when it names none with model=
DEFAULT_CANDIDATES = ["default:", "rotations:rotations=true",
                      "rotations-center:rotations=true,normalization=center-image",
                      "rotations-none:rotations=true,normalization=none"]


def softmax_scores(run_dir: Path, split: str, views=(lambda x: x,)) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of one run on one split, with the run's own input normalisation; averaged over
    ``views`` (functions of the raw images, such as flips) when given more than one."""
    from edge.train.images import image_logits, run_images
    from edge.train.runs import load_run

    run = load_run(run_dir)
    model = run.load_model()
    x, y = run_images(run, split)
    scores = []
    for view in views:
        logits = image_logits(model, np.ascontiguousarray(view(x)), run.config["preprocessing"]["normalization"])
        e = np.exp(logits - logits.max(1, keepdims=True))
        scores.append(e / e.sum(1, keepdims=True))
    return np.mean(scores, axis=0), y


def run_mflops(run_dir: Path) -> float:
    """The run's network cost at its input size, pruned or not."""
    from edge.models.complexity import image_model_cost
    from edge.train.runs import load_run

    run = load_run(run_dir)
    return round(image_model_cost(run.load_model(), run.config["preprocessing"]["size"])["mflops"], 1)


@functools.lru_cache(maxsize=None)
def plain_scores(run_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`softmax_scores` of the patches as they are, computed once per run and split: the agreement
    table and each candidate's average read the same runs."""
    return softmax_scores(run_dir, split)


def mean_softmax_prediction(runs: list[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels of a split the runs share, and the class their mean softmax picks for each image."""
    scored = [plain_scores(run, split) for run in runs]
    return scored[0][1], np.mean([p for p, _ in scored], axis=0).argmax(1)


def agreement(runs: list[Path]) -> dict:
    """Test images wrong in exactly k runs (k = 0 .. len(runs)), and the mean-softmax ensemble's accuracy."""
    from edge.train.runs import load_run

    if len({tuple(load_run(r).split["files"]["test"]) for r in runs}) != 1:
        raise SystemExit("the runs were not scored on the same test images")
    scored = [plain_scores(r, "test") for r in runs]
    y = scored[0][1]
    wrong = np.array([p.argmax(1) != y for p, _ in scored]).sum(0)
    ensemble = mean_softmax_prediction(runs, "test")[1]
    return {"images": int(y.size), "wrong_in_exactly_k_runs": [int((wrong == k).sum()) for k in range(len(runs) + 1)],
            "ensemble_accuracy": float(np.mean(ensemble == y))}


def seeds_averaged(runs: list[Path]) -> dict | None:
    """The runs as one ensemble (their mean softmax, as ``drsn-edge ensemble`` builds it): balanced accuracy on
    validation and accuracy on test.  None for a single run, or runs that drew different validation images."""
    from edge.errors import RunError
    from edge.train.ensemble import member_runs
    from edge.train.images import balanced_accuracy

    try:
        member_runs(runs)
    except RunError:
        return None
    (val_y, val_pred), (test_y, test_pred) = (mean_softmax_prediction(runs, split) for split in ("val", "test"))
    return {"val_balanced_accuracy": balanced_accuracy(val_y, val_pred),
            "test_accuracy": float(np.mean(test_pred == test_y))}


def near_copies(run_dir: Path, rms_grey_levels: float = 1.3) -> dict:
    """Test images within ``rms_grey_levels`` (RMS, 8-bit) of a training image: copies the byte-hash
    folding cannot see (re-encoded, or flat).  Their mean grey level tells flat patches from leaks."""
    from edge.train.images import run_images
    from edge.train.runs import load_run

    run = load_run(run_dir)
    (train, train_y), (test, test_y) = (run_images(run, split) for split in ("train", "test"))
    a, b = (x.reshape(x.shape[0], -1).astype(np.float64) * 255 for x in (test, train))
    squared = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T
    nearest = np.sqrt(np.maximum(squared.min(1), 0) / a.shape[1])
    close = nearest <= rms_grey_levels
    classes = run.config["classes"]
    return {"rms_grey_levels": rms_grey_levels, "test_images": int(a.shape[0]),
            "near_a_training_image": int(close.sum()),
            "by_class": {c: int((test_y[close] == k).sum()) for k, c in enumerate(classes)},
            "same_class_as_the_training_image": int((test_y[close] == train_y[squared.argmin(1)][close]).sum()),
            "their_std_grey_levels_median": float(np.median(a[close].std(1))) if close.any() else None}


def candidate_run(args: argparse.Namespace, name: str, seed: int) -> Path:
    """The run directory of one candidate's seed."""
    return args.work / f"castings-w{args.width}-{name}-s{seed}"


def parse_seeds(text: str) -> list[int]:
    return [int(s) for s in str(text).replace(";", ",").split(",")]


def candidate_seeds(overrides: dict, args: argparse.Namespace) -> list[int]:
    """A candidate's seeds: its own ``seeds=0;1``, else ``--seeds``."""
    return parse_seeds(overrides["seeds"]) if "seeds" in overrides else args.seeds


def teacher_runs(spec: str, seeds_of: dict[str, list[int]], args: argparse.Namespace) -> list[Path]:
    """``A;B@0`` -> the runs of every seed of candidate A and of candidate B's seed 0.

    Every candidate named must come before the student (``seeds_of``: the candidates so far
    and their seeds), so that its runs exist when the student trains; ValueError otherwise."""
    runs = []
    for item in str(spec).split(";"):
        name, _, seed = item.partition("@")
        if name not in seeds_of:
            raise ValueError(f"teachers={spec}: {name!r} is not a candidate named before its student")
        if not seed:
            seeds = seeds_of[name]
        elif seed.isdigit() and int(seed) in seeds_of[name]:
            seeds = [int(seed)]
        else:
            raise ValueError(f"teachers={spec}: candidate {name} has no run of seed {seed!r} "
                             f"(its seeds: {', '.join(map(str, seeds_of[name]))})")
        runs += [candidate_run(args, name, s) for s in seeds]
    return runs


def make_run(run: Path, overrides: dict, seed: int, args: argparse.Namespace, data: Path) -> None:
    """Train one candidate's run of one seed, or prune the run of the candidate it starts from."""
    from edge.train.compression import prune_run
    from edge.train.images import ImageTrainSettings, task_folder, train_images

    if "from" in overrides:
        print(f"== {run.name}: pruning", flush=True)
        prune_run(candidate_run(args, overrides["from"], seed), run, method="l1",
                  rounds=int(overrides["l1_rounds"]), rate=0.3, epochs=10, data=task_folder("xray-castings", data),
                  threads=args.threads, seed=seed, quiet=True, device=args.device)
        return
    print(f"== {run.name}: training", flush=True)
    fields = dict(overrides)
    size = int(fields.pop("size", 0)) or None  # the input size and the network are the model's, not training settings
    model = fields.pop("model", DEFAULT_MODEL)
    settings = ImageTrainSettings(**({"epochs": args.epochs, "seed": seed} | fields))
    train_images("xray-castings", data, run, model, size=size, width=args.width, settings=settings,
                 threads=args.threads, quiet=True, device=args.device)


def make_runs(todo: list[tuple[Path, dict, int]], args: argparse.Namespace, data: Path) -> None:
    """``make_run`` for every (run, overrides, seed) of ``todo``, ``--jobs`` at a time."""
    if args.jobs == 1 or len(todo) <= 1:
        for run, overrides, seed in todo:
            make_run(run, overrides, seed, args, data)
        return
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(make_run, run, overrides, seed, args, data) for run, overrides, seed in todo]:
            future.result()  # a failed training stops the benchmark with its own error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser, 16, "runs/castings-variants", "images_castings_variants.json")
    parser.add_argument("--candidate", action="append", default=None,
                        help="NAME:FIELD=VALUE,... (repeat; default: plain, quarter turns, quarter turns with "
                             "center-image and with no normalisation)")
    parser.add_argument("--seeds", type=int_list, default="0,1",
                        help="seeds of every candidate that names none with seeds= (default 0,1)")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="seeds of a candidate trained at once, in a process each (default 1)")
    args = parser.parse_args()

    from edge.cli.common import checked_device
    from edge.data.catalog import default_data_root
    from edge.model_names import IMAGE_MODELS
    from edge.train.images import evaluate_images

    where = checked_device(parser, args.device)
    data = args.data or default_data_root()
    plan, seeds_of = [], {}  # every candidate checked before the first run: a typo would cost hours
    for name, overrides in map(parse_candidate, args.candidate or DEFAULT_CANDIDATES):
        if "from" in overrides and set(overrides) - {"seeds"} != {"from", "l1_rounds"}:
            parser.error(f"candidate {name}: a pruned candidate takes from= and l1_rounds= only "
                         "(its training settings are those of the run it starts from)")
        if overrides.get("model", DEFAULT_MODEL) not in IMAGE_MODELS:
            parser.error(f"candidate {name}: model={overrides['model']}: choose one of {', '.join(IMAGE_MODELS)}")
        fields = {k: v for k, v in overrides.items() if k != "seeds"}  # which runs to train, not how
        if "teachers" in fields:  # the teachers' runs, as one ensemble
            try:
                fields["teachers"] = [str(run) for run in teacher_runs(fields["teachers"], seeds_of, args)]
            except ValueError as error:
                parser.error(f"candidate {name}: {error}")
        try:
            seeds_of[name] = candidate_seeds(overrides, args)
        except ValueError:
            parser.error(f"candidate {name}: seeds={overrides['seeds']}: whole numbers between ';' expected")
        if "from" in overrides and not set(seeds_of[name]) <= set(seeds_of.get(overrides["from"], ())):
            parser.error(f"candidate {name}: from={overrides['from']} must be a candidate named before it, "
                         "with a run of each of its seeds")
        plan.append((name, overrides, fields))
    rows, candidates = [], []
    for name, overrides, fields in plan:
        seeds = seeds_of[name]
        make_runs([(run, fields, seed) for seed in seeds
                   if not ((run := candidate_run(args, name, seed)) / "metrics.json").exists()], args, data)
        scores = []
        for seed in seeds:
            run = candidate_run(args, name, seed)
            metrics = json.loads((run / "metrics.json").read_text())
            test = evaluate_images(run, threads=args.threads)
            rows.append({"candidate": name, "seed": seed, "run": str(run),
                         "val_balanced_accuracy": metrics["best_val_score"],
                         "best_epoch": metrics.get("best_epoch"),  # a pruned run chose an epoch per round
                         "mflops": run_mflops(run),
                         "test_accuracy": test["accuracy"],
                         "test_recall": test["report"]["recall"]})
            scores.append(rows[-1])
            print(f"   {run.name}: validation {100 * rows[-1]['val_balanced_accuracy']:.2f}%, "
                  f"test {100 * rows[-1]['test_accuracy']:.2f}%", flush=True)
        candidates.append({"candidate": name, "settings": overrides, "seeds": seeds,
                           "val_mean": float(np.mean([r["val_balanced_accuracy"] for r in scores])),
                           "test_mean": float(np.mean([r["test_accuracy"] for r in scores])),
                           "seeds_averaged": seeds_averaged([Path(r["run"]) for r in scores])})
    chosen = max(candidates, key=lambda c: c["val_mean"])
    averaged = [c for c in candidates if c["seeds_averaged"]]
    chosen_averaged = max(averaged, key=lambda c: c["seeds_averaged"]["val_balanced_accuracy"]) if averaged else None
    runs = [Path(r["run"]) for r in rows]
    doc = {"benchmark": "images_castings_variants", "date": time.strftime("%Y-%m-%d"), "width": args.width,
           "epochs": args.epochs, "seeds": args.seeds, "trained_on": where,
           "protocol": "candidates compared by mean validation balanced accuracy over the seeds (validation drawn "
                       "from the training series); test images (the deduplicated published test series) scored "
                       "once per run, for the record",
           "candidates": candidates, "chosen_on_validation": chosen["candidate"],
           "seeds_averaged_chosen_on_validation": chosen_averaged and chosen_averaged["candidate"], "runs": rows,
           "test_agreement": agreement(runs), "near_copies": near_copies(runs[0])}
    write_results(doc, args.out)
    for c in candidates:
        averaged = c["seeds_averaged"]
        print(f"{c['candidate']:<18} validation {100 * c['val_mean']:.2f}%  test {100 * c['test_mean']:.2f}%"
              + (f"   seeds averaged: validation {100 * averaged['val_balanced_accuracy']:.2f}%  "
                 f"test {100 * averaged['test_accuracy']:.2f}%" if averaged else ""))
    if chosen_averaged:
        print(f"seeds averaged, chosen on validation: {chosen_averaged['candidate']}")
    test = doc["test_agreement"]
    print(f"chosen on validation: {chosen['candidate']}; test images wrong in exactly k of {len(runs)} runs: "
          f"{test['wrong_in_exactly_k_runs']}; ensemble of all runs {100 * test['ensemble_accuracy']:.2f}%")
    near = doc["near_copies"]
    print(f"{near['near_a_training_image']} test images within {near['rms_grey_levels']} grey levels (RMS) of a "
          f"training image, by class {near['by_class']}, median contrast (std) "
          f"{near['their_std_grey_levels_median']} grey levels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
