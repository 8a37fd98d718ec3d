"""Training on the CPU against a CUDA GPU: epoch time side by side, and the default recipes whole on the GPU.

For each device: three epochs of the default vibration model (DRSN-CW, every CWRU load)
and of the castings ResNet-18 at width 16, timed by the run's own clock (data loading
and augmentation, which stay on the CPU, included).  Then each default recipe whole on
the GPU, scored on its held-out test data, and ``--seeds`` castings trainings at once
on the one GPU (how a sweep of settings or seeds uses it).  Writes
benchmarks/results/training_devices.json.

    python benchmarks/training_devices.py --devices cpu,cuda --seeds 8
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edge.cli import main as cli  # noqa: E402
from results_file import write_results  # noqa: E402


def drsn_edge(argv: list[str]) -> str:
    """One drsn-edge command in this process; its standard output, or an error if it failed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli(argv)
    if rc != 0:
        raise SystemExit(f"drsn-edge {' '.join(argv)} failed ({rc})")
    return out.getvalue()


def trained_seconds(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["train_seconds"]


def summary(evaluation: dict) -> dict:
    """What the results keep of `drsn-edge evaluate --json`: accuracy (by SNR for vibration), how many scored."""
    keep = ("accuracy", "balanced_accuracy", "accuracy_by_snr", "windows", "images")
    return {k: evaluation[k] for k in keep if k in evaluation}


def recipes(data: Path) -> dict[str, list[str]]:
    return {"vibration": ["train", "--data", str(data / "cwru")],
            "castings_w16": ["train", "--task", "xray-castings", "--data", str(data), "--width", "16"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data", help="data root")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated --device values to compare")
    parser.add_argument("--seeds", type=int, default=8, help="castings trainings at once on the GPU (0: none)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "training_devices.json")
    args = parser.parse_args()
    import torch

    from edge.cli.common import checked_device

    devices = args.devices.split(",")
    gpu = next((d for d in devices if d != "cpu"), None)
    result = {"benchmark": "training_devices", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "cpus": os.cpu_count(), "gpu": checked_device(parser, gpu) if gpu else None,
              "three_epochs_s": {}, "whole_recipe_on_gpu": {}, "seeds_at_once_on_gpu": None}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for device in devices:
            for name, argv in recipes(args.data).items():
                run = work / f"{name}-3-{device}"
                drsn_edge(argv + ["--device", device, "--epochs", "3", "--out", str(run), "-q"])
                result["three_epochs_s"].setdefault(device, {})[name] = trained_seconds(run)
                print(device, name, "3 epochs:", trained_seconds(run), "s", flush=True)
        if gpu:
            for name, argv in recipes(args.data).items():
                run = work / f"{name}-{gpu}"
                drsn_edge(argv + ["--device", gpu, "--out", str(run), "-q"])
                scores = json.loads(drsn_edge(["evaluate", "--run", str(run), "--json"]
                                              + (["--snr", "none,-4,-8"] if name == "vibration" else [])))
                result["whole_recipe_on_gpu"][name] = {"train_s": trained_seconds(run)} | summary(scores)
                print(gpu, name, result["whole_recipe_on_gpu"][name], flush=True)
        if gpu and args.seeds:
            started = time.monotonic()
            runs = [work / f"castings-seed{s}" for s in range(1, args.seeds + 1)]
            jobs = [subprocess.Popen([sys.executable, "-m", "edge.cli", *recipes(args.data)["castings_w16"],
                                      "--seed", str(s), "--device", gpu, "--threads", "2", "--out", str(run), "-q"],
                                     cwd=HERE.parent) for s, run in enumerate(runs, start=1)]
            if any(job.wait() for job in jobs):
                raise SystemExit("a castings training failed")
            wall = time.monotonic() - started
            accuracy = [json.loads(drsn_edge(["evaluate", "--run", str(run), "--json"]))["accuracy"] for run in runs]
            result["seeds_at_once_on_gpu"] = {"runs": len(runs), "wall_s": round(wall, 1),
                                              "train_s": [trained_seconds(run) for run in runs],
                                              "test_accuracy": accuracy}
            print(f"{len(runs)} castings seeds at once: {wall:.0f} s, test accuracy {accuracy}", flush=True)
    write_results(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
