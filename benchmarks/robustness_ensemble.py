"""Would averaging a z-scored and a physical-units model hold up across loads?  Nested, evaluation only.

robustness_nested.py trained both candidates on every inner pair (seed 0) and every
outer fold (3 seeds).  This scores their two-model ensemble (mean of the softmax
outputs, the same noisy windows for both) on the same inner pairs, so it can be
chosen exactly as the single candidates were, and on the held-out load of each
outer fold.  No training.  ``--latency`` also builds an OpenVINO INT8 bundle of each
outer member (seed 0, held-out load 0) and times one member against all of them called
in turn on one thread, interleaved in the same rounds: what the ensemble costs a gateway
per window.  Writes benchmarks/results/robustness_ensemble.json.

    python benchmarks/robustness_ensemble.py
    python benchmarks/robustness_ensemble.py --members +sam20,+speed20 --outer-members +sam20,+speed20 --latency
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edge.cli.common import snr_list

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness_cwru import HERE, int8_backend, latency_inputs, read_done  # noqa: E402
from robustness_nested import INNER_SNRS  # noqa: E402
from results_file import write_results  # noqa: E402


def probabilities(run_dir: str, load: int, snrs: list, kind: str, seed: int = 1234) -> tuple[dict, np.ndarray]:
    """Softmax per SNR on every window of ``load`` (the evaluation windows and noise of ``drsn-edge evaluate``)."""
    from scipy.special import softmax

    from edge.train.evaluate import logits, noisy_copies, snr_key
    from edge.train.runs import load_run
    from edge.train.vibration import evaluation_windows, load_run_dataset

    run = load_run(run_dir)
    cfg, pre = run.config, run.config["preprocessing"]
    x, y, _ = evaluation_windows(load_run_dataset(cfg, None, (load,)), cfg, "test", pre["hops"]["test"],
                                  pre["window"])
    model = run.load_model()
    return {snr_key(snr): softmax(logits(model, noisy, pre["normalization"]), axis=1)
            for snr, noisy in noisy_copies(x, snrs, seed, kind)}, y


def ensemble_accuracy(runs: list[str], load: int, snrs: list, kind: str = "gaussian") -> dict[str, float]:
    probs, labels = zip(*(probabilities(r, load, snrs, kind) for r in runs))
    if any(not np.array_equal(labels[0], other) for other in labels[1:]):
        raise ValueError("the runs do not score the same windows")
    return {k: float(np.mean(np.mean([p[k] for p in probs], axis=0).argmax(1) == labels[0])) for k in probs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="drsn1d-cw")
    parser.add_argument("--members", default="+default,+raw", help="inner variants to average (nested tags)")
    parser.add_argument("--outer-members", default=",+raw", help="outer variants ('' is the default's runs)")
    parser.add_argument("--snr", type=snr_list, default="none,-8,-4,0", help="outer SNRs, white Gaussian")
    parser.add_argument("--pink-snr", type=snr_list, default="-4,0", help="outer SNRs, pink noise")
    parser.add_argument("--inner-only", action="store_true",
                        help="score the inner pairs only (when the outer runs of the members were not trained)")
    parser.add_argument("--latency", action="store_true",
                        help="also time the outer members' OpenVINO INT8 bundles, one against all in turn")
    parser.add_argument("--rounds", type=int, default=20, help="latency: interleaved rounds")
    parser.add_argument("--per-round", type=int, default=250, help="latency: calls per runner per round")
    parser.add_argument("--work", type=Path, default=Path("runs/robustness"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "robustness_ensemble.json")
    args = parser.parse_args()

    inner_rows = [r for r in read_done(args.work / "nested-inner.jsonl") if r["model"] == args.model]
    members = args.members.split(",")
    inner = {}
    for fold in (0, 1, 2):
        train = [x for x in (0, 1, 2) if x != fold]
        pairs = []
        for a, b in ((train[0], train[1]), (train[1], train[0])):
            runs = [next(r["run"] for r in inner_rows if r["variant"] == m and r["train_loads"] == [a]
                         and r["test_load"] == b) for m in members]
            acc = ensemble_accuracy(runs, b, INNER_SNRS)
            pairs.append({"train": a, "test": b, "accuracy": acc})
            print(f"inner fold {fold}: train {a} test {b}: " + "  ".join(f"{k} {100 * v:.2f}" for k, v in acc.items()),
                  flush=True)
        inner[str(fold)] = {"score": float(np.mean([np.mean(list(p["accuracy"].values())) for p in pairs])),
                            "pairs": pairs}

    doc = {"benchmark": "robustness_ensemble", "model": args.model, "members": members,
           "date": time.strftime("%Y-%m-%d"),
           "protocol": "mean softmax of the member runs on the same noisy windows; inner pairs as in "
                       "robustness_nested.py (seed 0)"
                       + ("; outer folds not scored" if args.inner_only else ", outer: every fold and seed"),
           "inner": inner}
    print("inner scores: " + ", ".join(f"fold {f} {100 * v['score']:.2f}" for f, v in inner.items()))
    if not args.inner_only:
        doc |= score_outer(args)
        mean = doc["outer_mean"]
        print("outer mean: " + "  ".join(f"{k} {100 * v:.2f}" for k, v in mean["accuracy_gaussian"].items())
              + "  pink " + "  ".join(f"{k} {100 * v:.2f}" for k, v in mean["accuracy_pink"].items()))
    if args.latency:
        doc["latency"] = member_latency(args)
        for name, p in doc["latency"].items():
            print(f"{name}: OpenVINO INT8 batch 1, one thread: p50 {p['p50_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms")
    write_results(doc, args.out)
    return 0


def outer_rows(args: argparse.Namespace) -> list[dict]:
    """Every logged outer run of the model: robustness_cwru.py's (variant '') and the nested choice's."""
    rows = [dict(r, variant="") for r in read_done(args.work / "runs.jsonl") if r["model"] == args.model]
    return rows + [r for r in read_done(args.work / "nested-outer.jsonl") if r["model"] == args.model]


def outer_run(rows: list[dict], member: str, seed: int, fold: int) -> str:
    """The run directory of one member's outer run for this seed and held-out load."""
    return next(r["run"] for r in rows if r["variant"] == member and r["seed"] == seed and r["test_load"] == fold)


def score_outer(args: argparse.Namespace) -> dict:
    """The ensemble of ``--outer-members`` on the held-out load of every outer fold and seed."""
    rows = outer_rows(args)
    snrs, pink = args.snr, args.pink_snr
    outer = []
    for fold in (0, 1, 2):
        for seed in (0, 1, 2):
            runs = [outer_run(rows, m, seed, fold) for m in args.outer_members.split(",")]
            row = {"test_load": fold, "seed": seed, "runs": runs,
                   "accuracy_gaussian": ensemble_accuracy(runs, fold, snrs),
                   "accuracy_pink": ensemble_accuracy(runs, fold, pink, "pink")}
            outer.append(row)
            print(f"outer fold {fold} seed {seed}: " + "  ".join(f"{k} {100 * v:.2f}"
                                                                  for k, v in row["accuracy_gaussian"].items())
                  + "  pink " + "  ".join(f"{k} {100 * v:.2f}" for k, v in row["accuracy_pink"].items()), flush=True)
    mean = {key: {k: float(np.mean([r[key][k] for r in outer])) for k in outer[0][key]}
            for key in ("accuracy_gaussian", "accuracy_pink")}
    return {"outer_mean": mean, "outer": outer}


def member_latency(args: argparse.Namespace) -> dict:
    """Batch-1 latency of one outer member's INT8 bundle and of every member's called in turn (the cost of the
    ensemble on a gateway), timed in the same interleaved rounds on the same windows."""
    import torch

    from calibration.latency import time_interleaved

    from edge.train.runs import load_run

    torch.set_num_threads(1)
    rows = outer_rows(args)
    members = args.outer_members.split(",")
    runs = [Path(outer_run(rows, m, seed=0, fold=0)) for m in members]
    backends = [int8_backend(run, args.work / "bundles" / f"{run.name}-openvino-int8")[0] for run in runs]
    inputs = latency_inputs(load_run(runs[0]).config)

    def all_in_turn(x: np.ndarray) -> None:
        for b in backends:
            b.infer(x)

    runners = {f"one member ({members[0] or 'default'})": backends[0].infer,
               f"{len(members)} members in turn": all_in_turn}
    return time_interleaved(runners, inputs, rounds=args.rounds, per_round=args.per_round)


if __name__ == "__main__":
    sys.exit(main())
