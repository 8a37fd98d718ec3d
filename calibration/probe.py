"""Time one candidate alone, in a fresh process: the runtime's per-window path and peak memory.

Run by the sweep as ``python -m calibration.probe``, one process per candidate, so
every candidate starts from the same state (no warm caches from another backend) and
its peak RSS is its own.  With one thread the process is pinned to one core.  Prints
one JSON object.  Imports torch only for the ``--run`` (PyTorch eager) reference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

import numpy as np

from calibration.latency import time_interleaved
from edge.data.preprocess import model_input


def _rss_mb() -> float:
    """Peak resident memory of this process so far (VmHWM; ru_maxrss would carry the parent's over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _pin(threads: int) -> list[int]:
    """Pin to the last ``threads`` cores (fewer when the machine has fewer)."""
    cores = sorted(os.sched_getaffinity(0))
    chosen = cores[-threads:] if threads < len(cores) else cores
    os.sched_setaffinity(0, chosen)
    return chosen


def bundle_runner(bundle_dir: str, threads: int):
    """The runtime's per-window work on a bundle: manifest preprocessing, then backend inference."""
    from edge.backends import load_backend
    from edge.bundle import open_bundle

    bundle = open_bundle(bundle_dir)
    backend = load_backend(bundle, threads=threads)
    backend.warm_up()
    normalization = bundle.manifest["preprocessing"]["normalization"]

    def run(raw: np.ndarray) -> np.ndarray:
        return backend.infer(model_input(raw, normalization))
    return run, backend.describe()


def eager_runner(run_dir: str, threads: int):
    """PyTorch eager FP32 on the training run: the naive choice the sweep is compared with."""
    import torch

    from edge.train.runs import load_run

    torch.set_num_threads(threads)
    run = load_run(run_dir)
    model = run.load_model()
    normalization = run.config["preprocessing"]["normalization"]

    @torch.no_grad()
    def infer(raw: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(model_input(raw, normalization))).numpy()
    return infer, {"backend": "pytorch", "version": torch.__version__, "device": "CPU", "precision": "fp32",
                   "threads": threads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibration.probe", description=__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--bundle", help="bundle directory")
    what.add_argument("--run", help="training run (PyTorch eager reference)")
    parser.add_argument("--inputs", type=Path, required=True, help=".npy of raw inputs: windows (N, L) or images (N, 1, H, W)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=200)
    args = parser.parse_args(argv)

    cores = _pin(args.threads)
    rss_before = _rss_mb()
    raw = np.load(args.inputs).astype(np.float32)
    runner, description = (bundle_runner(args.bundle, args.threads) if args.bundle
                           else eager_runner(args.run, args.threads))
    stats = time_interleaved({"candidate": runner}, raw, rounds=args.rounds, per_round=args.per_round,
                             batch=args.batch)["candidate"]
    batch = args.batch
    # with a batch, every window of it is decided when the call returns: p99 is per call, not divided
    result = stats | {"windows_per_s": 1e3 * batch / stats["p50_ms"], "batch": batch, "threads": args.threads,
                      "cores": cores, "rss_before_model_mb": round(rss_before, 1), "peak_rss_mb": round(_rss_mb(), 1),
                      "backend": description}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
