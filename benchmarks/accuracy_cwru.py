"""CWRU 10-class accuracy, clean and under noise: the DRSN family against the plain ResNet-1D.

Trains every model with the same data, seed, noise augmentation and step budget
(the `drsn-edge train` defaults), then scores each once on the held-out test
segments at every SNR with the same seeded noise.  Writes
benchmarks/results/accuracy_cwru.json and prints the table.

    python benchmarks/accuracy_cwru.py                       # all models, seeds 0 and 1 (~30 min, 2 cores)
    python benchmarks/accuracy_cwru.py --models drsn1d-cw --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edge.cli.common import int_list, name_list, snr_list
from edge.data.catalog import default_cwru_dir
from edge.train.trainer import TrainSettings
from edge.train.vibration import evaluate_cwru, train_cwru
from results_file import write_results

HERE = Path(__file__).resolve().parent


def _scores(run: Path, metrics: dict, snrs: list, threads: int) -> dict:
    """A run's size, training time and held-out test accuracy at every SNR (printed as it comes)."""
    evaluation = evaluate_cwru(run, snrs=snrs, threads=threads)
    print("   " + "  ".join(f"{k}:{100 * v:.2f}" for k, v in evaluation["accuracy_by_snr"].items())
          + f"  ({metrics['train_seconds']:.0f} s)", flush=True)
    return {"parameters": metrics["parameters"], "train_seconds": metrics["train_seconds"],
            "best_epoch": metrics["best_epoch"], "test_windows": evaluation["windows"],
            "accuracy_by_snr": evaluation["accuracy_by_snr"], "macro_f1_by_snr": evaluation["macro_f1_by_snr"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="CWRU folder (default ../shared/data/cwru)")
    parser.add_argument("--models", type=name_list, default="drsn1d-cw,drsn1d-cs,sarsn1d,resnet1d")
    parser.add_argument("--seeds", type=int_list, default="0,1")
    parser.add_argument("--snr", type=snr_list, default="none,-8,-6,-4,-2,0,2,4,6,8",
                        help="SNRs for white Gaussian noise, none for clean")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cross-load", type=name_list, default="drsn1d-cw,resnet1d",
                        help="models also trained on loads 0,1 and scored on every window of load 2 "
                             "(an operating condition they never saw); '' to skip")
    parser.add_argument("--work", type=Path, default=Path("runs/bench"), help="where the runs are written")
    parser.add_argument("--runs", type=Path, nargs="+", default=None,
                        help="score these runs (trained with the `drsn-edge train` defaults) instead of training; "
                             "no cross-load rows (benchmarks/robustness_cwru.py does those)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "accuracy_cwru.json")
    args = parser.parse_args()

    data = args.data or default_cwru_dir()
    snrs = args.snr
    results, cross = [], []
    if args.runs:   # score given runs: a run's name tells apart sizes of one family
        for run in args.runs:
            config = json.loads((run / "config.json").read_text())
            metrics = json.loads((run / "metrics.json").read_text())
            print(f"== {run}", flush=True)
            results.append({"model": run.name, "family": config["model"]["name"], "width": config["model"]["width"],
                            "seed": config["training"]["seed"], "run": str(run)}
                           | _scores(run, metrics, snrs, args.threads))
    else:
        for model in args.models:
            for seed in args.seeds:
                run = args.work / f"{model}-s{seed}"
                settings = TrainSettings(epochs=args.epochs, steps_per_epoch=args.steps, seed=seed)
                print(f"== {model} seed {seed}", flush=True)
                metrics = train_cwru(data, run, model_name=model, settings=settings, threads=args.threads, quiet=True)
                results.append({"model": model, "seed": seed} | _scores(run, metrics, snrs, args.threads))
        first_seed = results[0]["seed"]
        for model in args.cross_load:
            run = args.work / f"{model}-loads01"
            print(f"== {model} trained on loads 0,1, scored on load 2", flush=True)
            metrics = train_cwru(data, run, model_name=model, loads=(0, 1), threads=args.threads, quiet=True,
                                 settings=TrainSettings(epochs=args.epochs, steps_per_epoch=args.steps,
                                                        seed=first_seed))
            evaluation = evaluate_cwru(run, loads=(2,), snrs=snrs, threads=args.threads)
            cross.append({"model": model, "seed": first_seed, "train_loads": [0, 1], "test_loads": [2],
                          "test_windows": evaluation["windows"], "sources": evaluation["sources"],
                          "accuracy_by_snr": evaluation["accuracy_by_snr"], "train_seconds": metrics["train_seconds"]})
    models = list(dict.fromkeys(r["model"] for r in results))
    seeds = list(dict.fromkeys(r["seed"] for r in results))

    keys = list(results[0]["accuracy_by_snr"])
    summary = {}
    for model in models:
        rows = [r for r in results if r["model"] == model]
        summary[model] = {
            "seeds": [r["seed"] for r in rows],
            "accuracy_mean_by_snr": {k: float(np.mean([r["accuracy_by_snr"][k] for r in rows])) for k in keys},
            "accuracy_min_by_snr": {k: float(np.min([r["accuracy_by_snr"][k] for r in rows])) for k in keys},
            "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rows])),
        }
    doc = {
        "benchmark": "accuracy_cwru",
        "task": "CWRU 10-class, drive end, 12 kHz, loads 0-2 (normal only at load 0: 97.mat)",
        "split": "per record: first 70% train, next 15% validation (model selection), last 15% test; "
                 "one-window gaps; test windows hop 256",
        "training": TrainSettings(epochs=args.epochs, steps_per_epoch=args.steps).to_dict() | {"seeds": seeds},
        "noise": "white Gaussian at each SNR per window, seeded identically for every model",
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "machine": platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d"),
        "summary": summary,
        "runs": results,
        "cross_load": cross,
    }
    write_results(doc, args.out)

    print(f"\nmean test accuracy (%) over seeds {seeds}")
    print(f"{'model':<12}" + "".join(f"{k:>8}" for k in keys) + f"{'train s':>9}")
    for model, s in summary.items():
        print(f"{model:<12}" + "".join(f"{100 * s['accuracy_mean_by_snr'][k]:>8.2f}" for k in keys)
              + f"{s['train_seconds_mean']:>9.0f}")
    if cross:
        print("\ntrained on loads 0,1; scored on load 2 (normal: held-out segment of 97.mat only)")
        for r in cross:
            print(f"{r['model']:<12}" + "".join(f"{100 * r['accuracy_by_snr'][k]:>8.2f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
