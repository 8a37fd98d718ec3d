"""Nested leave-one-load-out: choose training settings across loads without looking at the held-out load.

The plain protocol (robustness_cwru.py) chooses settings on validation segments of
the training loads, which are the same operating condition as training: a setting
that helps across loads cannot show there.  Here, for each outer fold (held-out load
T, training loads A and B), every candidate is trained on A and scored on B, and
trained on B and scored on A.  A load is a training load of two folds: its run trains
once and is scored on both other loads, even when ``--folds`` asks for one fold only,
so that a later run of the other folds finds it; a score on a fold's held-out load
serves only the other fold's choice.  The candidate with the best inner score (the mean
accuracy clean, at -4 dB and at -8 dB, the three targets) is chosen for that fold;
only then is it trained on A+B with every seed and scored on T.  T is touched once
per figure, after the choice.

Candidates are ``NAME:FIELD=VALUE,...`` over the training settings
(``TrainSettings``), ``window`` (samples per window) and the model's ``width``,
``depth`` and ``instance_norm``; ``default:`` is the unchanged default, whose outer
runs are reused from robustness_cwru.py's log when present.  ``teachers=A;B`` names other
candidates to distil from: each run of this candidate learns from their runs on the
same training loads and seed (inner and outer alike), which are trained first when
missing.  ``--inner-from FILE`` takes the candidates of an earlier result file with
their inner scores (and the outer runs it holds) instead of training them again, so
a new candidate is chosen against all of them for the cost of its own runs; they are
taken as measured then, with the defaults of their day (a run logged in the work folder
is trained again when its settings differ from those asked now).
``--every-fold NAME`` also trains a candidate on the folds where it was not chosen and
scores it there, for comparison only (``every_fold`` in the result).  Writes
benchmarks/results/robustness_nested.json.

    python benchmarks/robustness_nested.py --candidate default: --candidate raw:normalization=none
    python benchmarks/robustness_nested.py --candidate speed:speed_jitter=0.03 \\
        --candidate rawls:normalization=none,label_smoothing=0.1 --candidate distil:teachers=speed;rawls
    python benchmarks/robustness_nested.py --device cuda --jobs 8 --candidate ...   # on a GPU host
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge.cli.common import int_list, snr_list

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness_cwru import (HERE, LOADS, add_training_arguments, fresh_rows, read_done, run_path,  # noqa: E402
                             summarise, train_all)
from results_file import write_results  # noqa: E402

INNER_SNRS = [None, -4.0, -8.0]


def parse_candidate(text: str) -> tuple[str, dict]:
    """``raw:normalization=none,speed_jitter=0.05`` -> ("raw", {...}); whole numbers become ints (``epochs=90``),
    other numbers floats, true/false bools."""
    name, _, fields = text.partition(":")
    overrides: dict = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        for kind in (int, float):
            try:
                overrides[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            overrides[key] = {"true": True, "false": False}.get(value.lower(), value)
    return name, overrides


def tag(name: str) -> str:
    """A candidate's run tag in the outer log; the default's outer runs are robustness_cwru.py's (no tag)."""
    return "" if name == "default" else f"+{name}"


def inner_tag(name: str) -> str:
    """A candidate's run tag in the inner log, where the default has runs of its own."""
    return f"+{name}"


def resolve(overrides: dict, work: Path, model: str, train_loads: tuple[int, ...], test_loads: tuple[int, ...],
            seed: int, inner: bool) -> dict:
    """``teachers=A;B`` (candidate names) -> those candidates' run directories for the same loads and seed."""
    if not isinstance(overrides.get("teachers"), str):
        return overrides
    return dict(overrides, teachers=[str(teacher_run(work, model, inner_tag(t) if inner else tag(t), train_loads,
                                                     test_loads, seed)) for t in teacher_names(overrides)])


def teacher_run(work: Path, model: str, tag: str, train_loads: tuple[int, ...], test_loads: tuple[int, ...],
                seed: int) -> Path:
    """A teacher's run directory.  An inner run trained before each was scored on both other loads is named by
    the one load it was scored on (``-train1-test2-``), and it is the same training: it is taken when the run of
    the current name is not there."""
    path = run_path(work, model, tag, train_loads, test_loads, seed)
    if path.is_dir() or len(test_loads) < 2:
        return path
    earlier = (run_path(work, model, tag, train_loads, (load,), seed) for load in test_loads)
    return next((run for run in earlier if run.is_dir()), path)


def teacher_names(overrides: dict) -> list[str]:
    value = overrides.get("teachers")
    return [t for t in value.split(";") if t] if isinstance(value, str) else []


#: Where a train_and_score task (robustness_cwru.py) holds its training overrides.
OVERRIDES = 10


def check_teachers(tasks: list[tuple]) -> None:
    """Stop before training a student whose teacher run is logged as done but no longer on disk."""
    gone = sorted({t for task in tasks for t in task[OVERRIDES].get("teachers", []) if not Path(t).is_dir()})
    if gone:
        raise SystemExit("teacher runs are in the logs but not on disk: " + ", ".join(gone)
                         + "; remove their rows from nested-inner.jsonl / nested-outer.jsonl to train them again")


def inner_plan(folds: list[int]) -> dict[int, tuple[int, ...]]:
    """The inner runs these outer folds need: training load -> the loads its run is scored on.  Each load trains
    once, scored on every other load (both are inner pairs when every fold is asked)."""
    needed = sorted({a for fold in folds for a in LOADS if a != fold})
    return {a: inner_tests(a) for a in needed}


def inner_tests(train_load: int) -> tuple[int, ...]:
    """The loads an inner run trained on ``train_load`` is scored on: every other one."""
    return tuple(x for x in LOADS if x != train_load)


def inner_score(row: dict) -> float:
    return float(np.mean(list(row["accuracy_gaussian"].values())))


def protocol(inner_seed: int) -> str:
    return ("per outer fold, each candidate trained on one training load and scored on the other (both ways, "
            "seed %d); chosen by the mean accuracy clean, -4 dB and -8 dB; the held-out load is scored only with "
            "the chosen candidate" % inner_seed)


def inner_key(run: dict) -> tuple:
    """What identifies an inner run: its candidate, training load and test load."""
    return run["variant"], tuple(run["train_loads"]), run["test_load"]


def first_of_each(inner: list[dict]) -> list[dict]:
    """Inner runs with each ``inner_key`` once: a run both logged in this work folder and reused
    from a result file (or listed twice there) would otherwise weigh double."""
    seen, kept = set(), []
    for r in inner:
        if inner_key(r) not in seen:
            seen.add(inner_key(r))
            kept.append(r)
    return kept


def earlier_result(path: Path, model: str, inner_seed: int) -> dict:
    """An earlier result file of this script, as log rows: its candidates, inner runs and outer runs.

    Only a file of the same model and inner seed is taken; its rows keep ``reused_from``.
    """
    doc = json.loads(path.read_text())
    if doc.get("benchmark") != "robustness_nested" or doc.get("model") != model or doc.get("protocol") != protocol(
            inner_seed):
        raise SystemExit(f"{path} is not a nested result of {model} with inner seed {inner_seed}")
    inner = [{"model": model, "variant": inner_tag(name), "seed": inner_seed, "train_loads": run["train"],
              "test_load": run["test"], "accuracy_gaussian": run["accuracy"], "reused_from": str(path)}
             for name, folds in doc["inner"].items() for fold in folds.values() for run in fold["runs"]]
    outer = [dict(r, reused_from=str(path)) for r in doc["runs"]]
    return {"candidates": doc["candidates"], "inner": inner, "outer": outer, "default": doc.get("default")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser)
    parser.add_argument("--model", default="drsn1d-cw")
    parser.add_argument("--candidate", action="append", required=True,
                        help="NAME:FIELD=VALUE,... (repeat); 'default:' is the training default")
    parser.add_argument("--seeds", type=int_list, default="0,1,2",
                        help="seeds of the outer runs (the inner runs use the first)")
    parser.add_argument("--folds", type=int_list, default="0,1,2", help="held-out loads, one outer fold each")
    parser.add_argument("--snr", type=snr_list, default="none,-8,-6,-4,-2,0,4,8", help="outer SNRs, white Gaussian")
    parser.add_argument("--pink-snr", type=snr_list, default="-8,-4,0", help="outer SNRs, pink noise")
    parser.add_argument("--work", type=Path, default=Path("runs/robustness"),
                        help="runs and logs; the default runs of robustness_cwru.py are reused from here")
    parser.add_argument("--inner-from", type=Path, metavar="FILE",
                        help="an earlier result file of this script (same model and seeds): its candidates join "
                             "the choice with the inner scores measured there, and its outer runs are reused, "
                             "as measured then (with the defaults of their day)")
    parser.add_argument("--every-fold", action="append", default=[], metavar="NAME",
                        help="also train this candidate on every outer fold, chosen or not, and score it there for "
                             "comparison only (the result's every_fold); the nested figure is unchanged (repeat)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "robustness_nested.json")
    args = parser.parse_args()

    from edge.cli.common import checked_device
    from edge.data.catalog import default_cwru_dir

    where = checked_device(parser, args.device)
    data = str(args.data or default_cwru_dir())
    candidates = dict(parse_candidate(c) for c in args.candidate)
    if unknown := [name for name in args.every_fold if name not in candidates]:
        parser.error(f"--every-fold {', '.join(unknown)}: not a --candidate")
    if candidates.get("default"):  # its outer runs are robustness_cwru.py's, trained with the defaults
        parser.error("--candidate default: is the training defaults and takes no settings; give other settings "
                     "a name of their own (e.g. nosam:sam=0)")
    for name, overrides in candidates.items():
        unknown = [t for t in teacher_names(overrides) if t not in candidates or teacher_names(candidates[t])]
        if unknown:
            parser.error(f"candidate {name}: teachers {', '.join(unknown)} must be candidates without teachers")
    seeds = args.seeds
    folds = args.folds
    earlier = earlier_result(args.inner_from, args.model, seeds[0]) if args.inner_from else None
    reused_names = []
    if earlier:  # candidates named here are trained (or found in the logs) as usual
        reused_names = [name for name in earlier["candidates"] if name not in candidates]
        candidates |= {name: earlier["candidates"][name] for name in reused_names}
        reused_tags = {inner_tag(name) for name in reused_names}
        earlier["inner"] = [r for r in earlier["inner"] if r["variant"] in reused_tags]
    args.work.mkdir(parents=True, exist_ok=True)
    inner_log, outer_log = args.work / "nested-inner.jsonl", args.work / "nested-outer.jsonl"

    # Inner: every candidate, trained on one training load and scored on the other.  A load is the training
    # load of two folds' inner runs (load 1: train 1 test 2 for fold 0, train 1 test 0 for fold 2), which are
    # the same training: it is trained once and scored on both other loads, whichever folds are asked now.
    plan = inner_plan(folds)

    def asked(row: dict, inner: bool) -> dict | None:
        """The overrides the candidate of a logged run asks for now (resolved teachers), None if none does."""
        names = {(inner_tag(n) if inner else tag(n)): n for n in candidates}
        if (name := names.get(row["variant"])) is None:
            return None
        tests = inner_tests(row["train_loads"][0]) if inner else (row["test_load"],)
        return resolve(candidates[name], args.work / "inner" if inner else args.work, args.model,
                       tuple(row["train_loads"]), tests, row["seed"], inner)

    logged = fresh_rows([r for r in read_done(inner_log) if r["model"] == args.model],
                        lambda r: asked(r, inner=True), args.epochs, args.steps)
    inner = first_of_each(logged + (earlier["inner"] if earlier else []))
    done = {inner_key(r) for r in inner}
    todo = [(data, str(args.work / "inner"), args.model, seeds[0], tests, INNER_SNRS, [], args.epochs, args.steps,
             (a,), resolve(candidates[name], args.work / "inner", args.model, (a,), tests, seeds[0], inner=True),
             inner_tag(name))
            for name in candidates for a, tests in plan.items()
            if any((inner_tag(name), (a,), b) not in done for b in tests)]
    print(f"inner: {len(done)} scores done, {len(todo)} runs to train ({sum(len(t[4]) for t in todo)} scores)",
          flush=True)
    # Teachers train before their students, in a round of their own.
    inner += train_all([t for t in todo if not t[OVERRIDES].get("teachers")], inner_log, args.jobs, args.device)
    students = [t for t in todo if t[OVERRIDES].get("teachers")]
    check_teachers(students)
    inner += train_all(students, inner_log, args.jobs, args.device)
    inner = first_of_each(inner)  # a run trained for one missing score also scores the load already done

    def inner_of(name: str, fold: int) -> list[dict]:
        train = [x for x in LOADS if x != fold]
        return [r for r in inner if r["variant"] == inner_tag(name)
                and set(r["train_loads"]) | {r["test_load"]} == set(train) and r["seed"] == seeds[0]]

    choice = {}
    for fold in folds:
        scores = {name: float(np.mean([inner_score(r) for r in inner_of(name, fold)])) for name in candidates}
        choice[fold] = max(scores, key=scores.get)
        print(f"fold {fold}: inner scores " + ", ".join(f"{n} {100 * v:.2f}" for n, v in scores.items())
              + f" -> {choice[fold]}", flush=True)

    # Outer: the chosen candidate on both training loads, every seed, scored on the held-out load.
    snrs, pink_snrs = args.snr, args.pink_snr
    reused = [dict(r, variant="", overrides={}) for r in read_done(args.work / "runs.jsonl")
              if r["model"] == args.model]
    outer = fresh_rows([r for r in read_done(outer_log) if r["model"] == args.model] + reused,
                       lambda r: asked(r, inner=False), args.epochs, args.steps)
    if earlier:
        logged = {(r["variant"], r["seed"], r["test_load"]) for r in outer}
        outer += [r for r in earlier["outer"] if (r["variant"], r["seed"], r["test_load"]) not in logged]
    have = {(r["variant"], r["seed"], r["test_load"]) for r in outer}

    def outer_task(name: str, fold: int, seed: int) -> tuple:
        train = tuple(x for x in LOADS if x != fold)
        return (data, str(args.work), args.model, seed, (fold,), snrs, pink_snrs, args.epochs, args.steps, None,
                resolve(candidates[name], args.work, args.model, train, (fold,), seed, inner=False), tag(name))

    # A candidate both chosen and named by --every-fold is one job: each round keeps a job once.
    outer_jobs = [(name, f, s) for f in folds for name in [choice[f], *args.every_fold] for s in seeds]
    # Teachers only for the students still to train (a reused or logged student needs none).
    rounds = [[(t, f, s) for name, f, s in outer_jobs if (tag(name), s, f) not in have
               for t in teacher_names(candidates[name])], outer_jobs]
    for round_ in rounds:
        todo = [outer_task(*job) for job in dict.fromkeys(round_) if (tag(job[0]), job[2], job[1]) not in have]
        check_teachers(todo)
        print(f"outer: {len(todo)} runs to train", flush=True)
        new = train_all(todo, outer_log, args.jobs, args.device)
        outer += new
        have |= {(r["variant"], r["seed"], r["test_load"]) for r in new}
    chosen = [r for r in outer if r["seed"] in seeds and r["test_load"] in folds
              and r["variant"] == tag(choice[r["test_load"]])]

    def table(rows: list[dict]) -> dict:
        return {noise: summarise(rows, args.model, f"accuracy_{noise}") for noise in ("gaussian", "pink")}

    def complete(variant: str) -> list[dict] | None:
        rows = [r for r in outer if r["variant"] == variant and r["seed"] in seeds and r["test_load"] in folds]
        return rows if len(rows) == len(seeds) * len(folds) else None

    default_rows = complete("")
    doc = {
        "benchmark": "robustness_nested",
        "model": args.model,
        "protocol": protocol(seeds[0]),
        "candidates": candidates,
        "reused": {"from": str(args.inner_from), "candidates": reused_names} if earlier else None,
        "inner": {name: {str(f): {"score": float(np.mean([inner_score(r) for r in inner_of(name, f)])),
                                  "runs": [{"train": r["train_loads"], "test": r["test_load"],
                                            "accuracy": r["accuracy_gaussian"]} for r in inner_of(name, f)]}
                         for f in folds} for name in candidates},
        "chosen": {str(f): choice[f] for f in folds},
        "nested": table(chosen),
        "default": table(default_rows) if default_rows else (earlier or {}).get("default"),
        # Candidates trained on every outer fold (chosen in an earlier round, say): for comparison only.
        "every_fold": {name: table(rows) for name in candidates if (rows := complete(tag(name)))},
        "date": time.strftime("%Y-%m-%d"),
        "trained_on": where,  # this invocation's; each run row says where it trained
        "runs": chosen,
    }
    write_results(doc, args.out)
    for label, res in (("nested choice", doc["nested"]), ("default", doc["default"])):
        if res:
            g = res["gaussian"]
            print(f"{label:>14}: " + "  ".join(f"{k} {100 * v['mean']:.2f}" for k, v in g.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
