"""Smaller image models: the pruning table (L1 rounds, ASFP rates) and distillation against training alone.

Pruning (X-ray castings by default): the baseline ResNet-18 run, three rounds of L1
filter pruning at 30 % with fine-tuning between them, and ASFP at 0.1 / 0.2 / 0.3.
Each row: test accuracy, parameters, MFLOPs, OpenVINO INT8 latency of one tile's
batch (the patches across a 640 px detector).  Distillation (NEU by default): a SARSN
teacher, a small ResNet-18 student distilled from it (RKD distance + angle), and the
same student trained alone with the same data, seed and epochs.
Writes benchmarks/results/images_pruning.json and images_distillation.json (see --pruning-out).

    python benchmarks/images_compression.py --baseline runs/images/xray-castings-resnet18-w32-s0 --skip-distillation
    python benchmarks/images_compression.py --baseline runs/images/xray-fishbones-resnet18-w32-s0 --skip-distillation \\
        --pruning-out benchmarks/results/images_pruning_fishbones.json
    python benchmarks/images_compression.py --skip-pruning --teacher-task xray-castings
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from images_accuracy import add_settings_argument, settings_overrides  # noqa: E402
from edge.cli.common import add_device_option, float_list  # noqa: E402
from results_file import write_results  # noqa: E402


def _row(run: Path, label: str, work: Path, threads: int) -> dict:
    """Accuracy (FP32 and the OpenVINO INT8 bundle), size and FLOPs of one run; its bundle is timed later."""
    from edge.export.build import BuildOptions, build_bundle
    from edge.models.complexity import image_model_cost
    from edge.train.images import evaluate_images
    from edge.train.runs import load_run

    model = load_run(run).load_model()
    size = model.config.input_size
    result = evaluate_images(run, threads=threads)
    bundle = work / "bundles" / f"{run.name}-openvino-int8"
    manifest = build_bundle(run, bundle, BuildOptions(target="openvino", precision="int8", guard_drop=1.0),
                            log=lambda *_: None)
    return {"label": label, "run": str(run), "bundle": str(bundle), "test_images": result["images"],
            "accuracy": result["accuracy"], "balanced_accuracy": result["balanced_accuracy"],
            "accuracy_openvino_int8": manifest["accuracy"]["int8"], **image_model_cost(model, size), "size": size}


def _time_tiles(rows: list[dict], threads: int) -> None:
    """OpenVINO INT8 latency of one tile's batch (the patches across 640 px), all bundles in the same rounds."""
    import numpy as np

    from calibration.latency import time_interleaved
    from edge.backends import load_backend
    from edge.bundle import open_bundle

    size = rows[0]["size"]
    lanes = max(1, 640 // size)
    tile = np.random.default_rng(0).random((64, 1, size, size)).astype(np.float32)
    runners = {}
    for r in rows:
        backend = load_backend(open_bundle(r["bundle"]), threads=threads)
        backend.warm_up(10, batch=lanes)
        runners[r["label"]] = backend.infer
    stats = time_interleaved(runners, tile, rounds=10, per_round=30, batch=lanes)
    for r in rows:
        r["openvino_int8_tile"] = {"lanes": lanes, "threads": threads, **stats[r["label"]]}


def _pruned(baseline: Path, out: Path, method: str, rounds: int, rate: float, epochs: int, threads: int,
            device: str) -> Path:
    """Prune and fine-tune once (on ``device``); a run already there is reused, so the table can be re-timed
    alone."""
    from edge.train.compression import prune_run

    if not (out / "model.pt").exists():
        prune_run(baseline, out, method, rounds, rate, epochs, threads=threads, quiet=True, device=device)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="trained image run to prune (needed unless --skip-pruning)")
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--teacher-task", default="neu")
    parser.add_argument("--teacher-width", type=int, default=32)
    parser.add_argument("--student-width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--skip-pruning", action="store_true", help="only the distillation part")
    parser.add_argument("--skip-distillation", action="store_true", help="only the pruning table")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2, help="training and evaluation threads")
    add_device_option(parser)
    parser.add_argument("--inference-threads", type=int, default=1, help="OpenVINO threads for the tile latency")
    parser.add_argument("--asfp-rates", type=float_list, default="0.1,0.2,0.3",
                        help="ASFP rows of the pruning table ('' for none)")
    parser.add_argument("--work", type=Path, default=Path("runs/images"))
    parser.add_argument("--pruning-out", type=Path, default=HERE / "results" / "images_pruning.json",
                        help="where the pruning table goes (one file per baseline)")
    parser.add_argument("--distillation-out", type=Path, default=HERE / "results" / "images_distillation.json")
    add_settings_argument(parser)
    args = parser.parse_args()

    from edge.cli.common import checked_device
    from edge.data.catalog import default_data_root
    from edge.train.compression import distill_run
    from edge.train.images import ImageTrainSettings, evaluate_images, train_images

    where = checked_device(parser, args.device)
    if not args.skip_pruning:
        if args.baseline is None:
            parser.error("--baseline is needed for the pruning table (or give --skip-pruning)")
        rows = [_row(args.baseline, "baseline", args.work, args.threads)]
        l1 = _pruned(args.baseline, args.work / f"{args.baseline.name}-l1x3", "l1", 3, 0.3, args.finetune_epochs,
                     args.threads, args.device)
        history = json.loads((l1 / "metrics.json").read_text())["pruning"]
        rows.append(_row(l1, "L1 3 x 30 %", args.work, args.threads) | {"rounds": history})
        for rate in args.asfp_rates:
            out = _pruned(args.baseline, args.work / f"{args.baseline.name}-asfp{int(rate * 100)}", "asfp", 1, rate,
                          args.finetune_epochs, args.threads, args.device)
            rows.append(_row(out, f"ASFP {rate:g}", args.work, args.threads))
        _time_tiles(rows, args.inference_threads)
        base = rows[0]
        for r in rows:
            r["flops_vs_baseline"] = r["mflops"] / base["mflops"]
            r["accuracy_drop_pt"] = 100 * (base["accuracy"] - r["accuracy"])
        write_results({"benchmark": "images_pruning", "date": time.strftime("%Y-%m-%d"), "baseline": str(args.baseline),
                       "finetune_epochs": args.finetune_epochs, "trained_on": where, "rows": rows}, args.pruning_out)
        print(f"{'model':<14}{'accuracy':>10}{'int8':>8}{'params':>11}{'MFLOPs':>9}{'FLOPs':>7}{'tile p99':>10}")
        for r in rows:
            print(f"{r['label']:<14}{100 * r['accuracy']:>9.2f}%{100 * r['accuracy_openvino_int8']:>7.2f}%"
                  f"{r['parameters']:>11,}{r['mflops']:>9.1f}{100 * r['flops_vs_baseline']:>6.0f}%"
                  f"{r['openvino_int8_tile']['p99_ms']:>8.2f}ms")

    if not args.skip_distillation:
        data = args.data or default_data_root()
        task = args.teacher_task
        teacher = args.work / f"{task}-sarsn-w{args.teacher_width}"
        overrides = settings_overrides(args.set)
        settings = ImageTrainSettings(**({"epochs": args.epochs} | overrides))
        train_images(task, data, teacher, "sarsn", settings=settings, width=args.teacher_width, threads=args.threads,
                     quiet=True, device=args.device)
        alone = args.work / f"{task}-resnet18-w{args.student_width}-alone"
        train_images(task, data, alone, "resnet18", settings=settings, width=args.student_width,
                     threads=args.threads, quiet=True, device=args.device)
        student = args.work / f"{task}-resnet18-w{args.student_width}-rkd"
        distill_run(teacher, student, "resnet18", width=args.student_width, epochs=args.epochs, threads=args.threads,
                    quiet=True, device=args.device)
        drows = []
        for label, run in (("teacher SARSN", teacher), ("student alone", alone), ("student distilled", student)):
            r = evaluate_images(run, threads=args.threads)
            drows.append({"label": label, "run": str(run), "accuracy": r["accuracy"], "test_images": r["images"],
                          "parameters": json.loads((run / "metrics.json").read_text())["parameters"]})
            print(f"{label:<20}{100 * r['accuracy']:>8.2f}%  ({drows[-1]['parameters']:,} parameters)")
        write_results({"benchmark": "images_distillation", "date": time.strftime("%Y-%m-%d"), "task": task,
                       "epochs": args.epochs, "seed": 0, "settings_over_task_defaults": overrides,
                       "trained_on": where, "rows": drows}, args.distillation_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
