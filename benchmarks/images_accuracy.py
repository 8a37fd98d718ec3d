"""Image models on the real sets: accuracy on the deduplicated test images, FP32 against INT8.

For each task (X-ray castings, X-ray fishbones, NEU strip steel): trains the image
model (`drsn-edge train --task ...` defaults unless overridden), scores the test images
once, builds the OpenVINO INT8 and the Q/DQ INT8 (ONNX Runtime) bundles through the
normal build path and reports their accuracy on the same test images, and the
OpenVINO INT8 latency of one tile's batch (the patches across a 640 px detector).
Writes benchmarks/results/images_accuracy.json.

    python benchmarks/images_accuracy.py                       # all three tasks
    python benchmarks/images_accuracy.py --tasks neu --width 32 --epochs 40
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from edge.cli.common import name_list
from results_file import write_results

HERE = Path(__file__).resolve().parent
TARGETS = {"xray-castings": 0.98, "xray-fishbones": 0.95, "neu": 0.98}


def add_training_arguments(parser: argparse.ArgumentParser, width: int, work: str, out: str) -> None:
    """The options every image benchmark shares: data, width, epochs, threads, device, where runs and results go."""
    from edge.cli.common import add_device_option

    parser.add_argument("--data", type=Path, default=None, help="data root (default ../shared/data)")
    parser.add_argument("--width", type=int, default=width, help="first-stage width (64 is the full ResNet-18)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    add_device_option(parser)
    parser.add_argument("--work", type=Path, default=Path(work), help=f"run directories (default {work})")
    parser.add_argument("--out", type=Path, default=HERE / "results" / out)


def add_settings_argument(parser: argparse.ArgumentParser) -> None:
    """--set: training settings over the task's defaults, as a benchmark's candidates spell them."""
    parser.add_argument("--set", default="", metavar="FIELD=VALUE,...",
                        help="ImageTrainSettings fields over the task's defaults, e.g. "
                             "normalization=zscore-image,weight_decay=0.0005 (the castings' defaults before the "
                             "high-pass input)")


def settings_overrides(text: str) -> dict:
    """``normalization=zscore-image,weight_decay=0.0005`` -> the fields it sets."""
    from robustness_nested import parse_candidate

    return parse_candidate(":" + text)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser, 32, "runs/images", "images_accuracy.json")
    parser.add_argument("--tasks", type=name_list, default="xray-castings,xray-fishbones,neu")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--seed", type=int, default=0)
    add_settings_argument(parser)
    args = parser.parse_args()
    overrides = settings_overrides(args.set)

    import torch

    from calibration.latency import time_interleaved
    from edge.backends import load_backend
    from edge.bundle import open_bundle
    from edge.cli.common import checked_device
    from edge.data.catalog import default_data_root
    from edge.export.build import BuildOptions, build_bundle
    from edge.train.images import ImageTrainSettings, evaluate_images, train_images

    where = checked_device(parser, args.device)
    data = args.data or default_data_root()
    rows = []
    for task in args.tasks:
        run = args.work / f"{task}-{args.model}-w{args.width}-s{args.seed}"
        print(f"== {task}: training {args.model} width {args.width}", flush=True)
        settings = ImageTrainSettings(**({"epochs": args.epochs, "seed": args.seed} | overrides))
        metrics = train_images(task, data, run, args.model, settings=settings, width=args.width,
                               threads=args.threads, quiet=True, device=args.device)
        result = evaluate_images(run, threads=args.threads)
        row = {"task": task, "model": args.model, "width": args.width, "run": str(run),
               "parameters": metrics["parameters"], "train_seconds": metrics["train_seconds"],
               "best_epoch": metrics["best_epoch"], "test_images": result["images"],
               "accuracy_fp32": result["accuracy"], "balanced_accuracy_fp32": result["balanced_accuracy"],
               "recall_fp32": result["report"]["recall"], "target": TARGETS.get(task)}
        for target in ("openvino", "onnxruntime"):
            out = args.work / "bundles" / f"{run.name}-{target}-int8"
            manifest = build_bundle(run, out, BuildOptions(target=target, precision="int8", guard_drop=1.0),
                                    log=lambda *_: None)
            row[f"accuracy_{target}_int8"] = manifest["accuracy"]["int8"]
            row[f"accuracy_{target}_onnx_fp32"] = manifest["accuracy"]["fp32"]
        backend = load_backend(open_bundle(args.work / "bundles" / f"{run.name}-openvino-int8"), threads=args.threads)
        size = json.loads((run / "config.json").read_text())["preprocessing"]["size"]
        lanes = max(1, 640 // size)
        tile = torch.rand(64, 1, size, size).numpy()
        lat = time_interleaved({"tile": backend.infer}, tile, rounds=5, per_round=40, batch=lanes)["tile"]
        row["openvino_int8_tile"] = {"lanes": lanes, **lat}
        rows.append(row)
        print(f"   test {result['images']} images: fp32 {100 * row['accuracy_fp32']:.2f}%, OpenVINO int8 "
              f"{100 * row['accuracy_openvino_int8']:.2f}%, Q/DQ int8 {100 * row['accuracy_onnxruntime_int8']:.2f}%; "
              f"tile of {lanes} patches p99 {lat['p99_ms']:.2f} ms", flush=True)
    doc = {"benchmark": "images_accuracy", "date": time.strftime("%Y-%m-%d"),
           "machine": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                       "torch": torch.__version__, "threads": args.threads, "trained_on": where},
           "protocol": "copies folded by content hash, published test split kept (castings, fishbones), NEU split "
                       "stratified and seeded; epoch chosen on validation images by balanced accuracy; the test "
                       "images scored once per figure",
           "settings_over_task_defaults": overrides, "rows": rows}
    write_results(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
