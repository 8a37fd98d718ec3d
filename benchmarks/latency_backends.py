"""Batch-1 latency of a model on every CPU backend, side by side in one run, and INT8 accuracy.

Builds (through the normal build path) the OpenVINO FP32, OpenVINO INT8, ONNX Runtime
FP32 and ONNX Runtime INT8 (the TensorRT-style Q/DQ model) bundles of a run, then
times PyTorch eager FP32 and the four bundles' backends in interleaved rounds on the
same real windows, so a noisy machine slows all alike.  Reports p50/p99/p99.9 per
backend and the ratio of each p50 to eager.  Several runs (``--run`` repeated) are
timed in the same rounds, their rows named by run folder, to compare two models
without a quiet and a busy minute between them.  Writes
benchmarks/results/latency_backends.json.

    python benchmarks/latency_backends.py --run runs/drsn [--threads 1] [--rounds 20 --per-round 250]
    python benchmarks/latency_backends.py --run runs/drsn --run runs/drsn-ibn --out /tmp/two.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from calibration.latency import time_interleaved
from edge.backends import load_backend
from edge.bundle import open_bundle
from edge.host import processor_name
from edge.export.build import BuildOptions, build_bundle
from edge.quantize.calibration import model_inputs
from edge.train.runs import load_run
from edge.train.vibration import run_split_windows
from results_file import write_results

HERE = Path(__file__).resolve().parent
VARIANTS = (("openvino", "fp32"), ("openvino", "int8"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", default=None,
                        help="run directory (default runs/drsn); repeat to time several models side by side, "
                             "in the same interleaved rounds on the first run's windows")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=250)
    parser.add_argument("--work", type=Path, default=Path("dist/bench"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latency_backends.json",
                        help="where the figures go (default benchmarks/results/latency_backends.json)")
    args = parser.parse_args()
    run_dirs = args.run or [Path("runs/drsn")]
    runs = [load_run(run_dir) for run_dir in run_dirs]
    shapes = {(run.config["preprocessing"]["window"], run.config["model"]["in_channels"]) for run in runs}
    if len(shapes) > 1 or len({d.name for d in run_dirs}) < len(run_dirs):
        parser.error("runs timed side by side take the same window and input channels, and their folders "
                     "distinct names (each names its rows)")

    labels = [""] if len(runs) == 1 else [f"{run_dir.name}: " for run_dir in run_dirs]  # each row's prefix

    torch.set_num_threads(args.threads)
    runners, accuracy = {}, {}
    for run_dir, run, label in zip(run_dirs, runs, labels):
        model = run.load_model()
        runners[f"{label}pytorch eager fp32"] = lambda x, model=model: model(torch.from_numpy(x))
        for target, precision in VARIANTS:
            out = args.work / label.rstrip(": ") / f"{target}-{precision}"
            manifest = build_bundle(run_dir, out, BuildOptions(target=target, precision=precision),
                                    log=lambda *_: None)
            accuracy[f"{label}{target} {precision}"] = {"fp32": manifest["accuracy"]["fp32"],
                                                        precision: manifest["accuracy"][precision]}
            backend = load_backend(open_bundle(out), threads=args.threads)
            backend.warm_up()
            runners[f"{label}{target} {precision}"] = backend.infer
    test_x, _ = run_split_windows(runs[0].config, "test")
    windows = model_inputs(test_x[:: max(1, test_x.shape[0] // 200)],
                           runs[0].config["preprocessing"]["normalization"])
    with torch.no_grad():
        stats = time_interleaved(runners, windows, rounds=args.rounds, per_round=args.per_round)
    for label in labels:
        eager = stats[f"{label}pytorch eager fp32"]["p50_ms"]
        for name, s in stats.items():
            if name.startswith(label):
                s["speedup_vs_eager_p50"] = eager / s["p50_ms"]
    doc = {"benchmark": "latency_backends",
           "run": str(run_dirs[0]) if len(runs) == 1 else [str(d) for d in run_dirs],
           "model": runs[0].config["model"]["name"] if len(runs) == 1 else [r.config["model"]["name"] for r in runs],
           "window": runs[0].config["preprocessing"]["window"], "batch": 1, "threads": args.threads,
           "rounds": args.rounds, "per_round": args.per_round,
           "machine": {"cpus": os.cpu_count(), "cpu": processor_name(),
                       "python": platform.python_version(), "torch": torch.__version__},
           "date": time.strftime("%Y-%m-%d"), "latency": stats, "accuracy_test_split": accuracy}
    out = args.out
    write_results(doc, out)
    print(f"batch-1 latency, {args.threads} thread(s), {args.rounds} interleaved rounds x {args.per_round}")
    width = max(22, *(len(name) + 2 for name in stats))
    print(f"{'backend':<{width}}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'x eager':>9}")
    for name, s in stats.items():
        print(f"{name:<{width}}{s['p50_ms']:>9.3f}{s['p99_ms']:>9.3f}{s['p99_9_ms']:>10.3f}"
              f"{s['speedup_vs_eager_p50']:>9.2f}")
    print("held-out test accuracy (fp32 -> deployed):")
    for name, a in accuracy.items():
        prec = name.split()[-1]
        print(f"  {name:<{width - 2}} {100 * a['fp32']:.2f}% -> {100 * a[prec]:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
