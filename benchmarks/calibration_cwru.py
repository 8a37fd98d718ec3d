"""The calibration sweep for the CWRU vibration family, the choice at four budgets, and the INT8 calibration study.

1. `drsn-edge calibrate` over the given runs: fp32 and int8, OpenVINO and ONNX Runtime,
   1 and 2 threads, validation accuracy clean and at SNR -4 dB (the wall time of the
   whole sweep is recorded: target <= 30 minutes on 2 cores).
2. For budgets of 0.1, 0.2, 0.5 and 1 ms per window: the chosen candidate next to the
   naive choice (PyTorch eager FP32 of the most accurate run).
3. INT8 validation accuracy of one run as a function of calibration-set size
   (32..1024) and method, on both INT8 paths, so a user knows how many windows to collect.

Writes benchmarks/results/calibration_cwru.json and calibration_sizes.json; the sweep's
own report (calibration.json, pareto.png, report.html) stays in --work.

    python benchmarks/calibration_cwru.py --runs runs/calib/drsn1d-cw runs/calib/drsn1d-cs \\
        runs/calib/resnet1d runs/calib/drsn1d-cw-w8
    python benchmarks/calibration_cwru.py --runs runs/drsn --sizes-only     # only 3., FP32 measured with it
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edge.cli.common import int_list
from results_file import write_results

HERE = Path(__file__).resolve().parent
BUDGETS_MS = (0.1, 0.2, 0.5, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="training runs (the shipped model among them)")
    parser.add_argument("--work", type=Path, default=Path("calib/cwru"))
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--sizes-run", default=None, help="run for the calibration-set study (default: the first)")
    parser.add_argument("--sizes", type=int_list, default="32,64,128,256,512,1024")
    parser.add_argument("--skip-sizes", action="store_true")
    parser.add_argument("--sizes-only", action="store_true",
                        help="only the calibration-set study (3.), on --sizes-run or the first run; FP32 from it")
    args = parser.parse_args()
    sizes_run, sizes = args.sizes_run or args.runs[0], args.sizes
    if args.sizes_only:
        return sizes_study(sizes_run, sizes, args.work, None)

    from calibration.cli import naive_choice
    from calibration.sweep import SweepSettings, choose, run_sweep

    sweep = SweepSettings(runs=args.runs, threads=[1, 2], snrs=[None, -4.0])
    started = time.monotonic()
    doc = run_sweep(sweep, args.work / "sweep")
    wall = time.monotonic() - started
    naive = naive_choice(doc)
    budgets = []
    overhead = doc["runtime_overhead"]["overhead_ms"]
    # each budget twice: for inference alone (what a model costs), and end to end (plus the runtime's overhead)
    for scope, with_overhead in (("inference", 0.0), ("end-to-end", overhead)):
        for budget in BUDGETS_MS + ((2.0, 5.0) if with_overhead else ()):
            choice = choose(doc, budget, args.margin, overhead_ms=with_overhead)
            budgets.append({"scope": scope, "budget_ms": budget, "margin": args.margin, "overhead_ms": with_overhead,
                            "reason": choice.reason, "chosen": _brief(choice.chosen),
                            "nearest": [_brief(r) for r in choice.nearest],
                            "naive": _brief(naive) | {"fits": naive["p99_ms"] <= choice.limit_ms} if naive else None})
    result = {"benchmark": "calibration_cwru", "sweep_wall_s": round(wall, 1),
              "sweep_wall_note": "wall time of this invocation: a full sweep from an empty --work, or only what a "
                                 "resumed sweep had left to do",
              "candidates": len(doc["candidates"]), "device": doc["device"],
              "runtime_overhead": doc["runtime_overhead"], "pareto_front": doc["pareto_front"],
              "budgets": budgets, "report": str(args.work / "sweep" / "report.html"),
              "table": [_brief(r) | {"status": r["status"]} for r in doc["candidates"]]}
    out = HERE / "results" / "calibration_cwru.json"
    write_results(result, out)
    print(f"\nsweep of {len(doc['candidates'])} candidates: {wall / 60:.1f} min wall; runtime overhead "
          f"{doc['runtime_overhead']['overhead_ms']:.3f} ms")
    print(f"{'scope':<11}{'budget':>8}  {'chosen':<42}{'acc %':>7}{'p99 ms':>8}   {'naive (eager fp32)':<30}"
          f"{'acc %':>7}{'p99 ms':>8}")
    for b in budgets:
        c, n = b["chosen"], b["naive"]
        left = f"{c['key']:<42}{100 * c['accuracy']:>7.2f}{c['p99_ms']:>8.3f}" if c else f"{'nothing fits':<57}"
        right = f"{n['key']:<30}{100 * n['accuracy']:>7.2f}{n['p99_ms']:>8.3f}{'' if n['fits'] else ' (over)'}" if n else ""
        print(f"{b['scope']:<11}{b['budget_ms']:>6g}ms  {left}   {right}")

    if not args.skip_sizes:
        sizes_study(sizes_run, sizes, args.work, _fp32_by_snr(doc["candidates"], sizes_run))
    return 0


def _brief(row: dict | None) -> dict | None:
    if row is None:
        return None
    keep = ("key", "run", "backend", "precision", "threads", "batch", "accuracy", "accuracy_by_snr", "p50_ms",
            "p99_ms", "p99_9_ms", "peak_rss_mb", "model_bytes")
    return {k: row.get(k) for k in keep}


def _fp32_by_snr(candidates: list[dict], run: str) -> dict | None:
    """FP32 validation accuracy per SNR of ``run`` among a sweep's candidates (None if not measured)."""
    fp32 = [r for r in candidates if r["run"] == run and r["precision"] == "fp32" and r["status"] == "ok"]
    return fp32[0]["accuracy_by_snr"] if fp32 else None


def sizes_study(run: str, sizes: list[int], work: Path, fp32_by_snr: dict | None) -> int:
    """INT8 validation accuracy of ``run`` by calibration-set size and method, both INT8 paths.

    Without the sweep's FP32 figure (``fp32_by_snr`` None), FP32 is measured in the study itself.
    """
    from calibration.sweep import SweepSettings, run_sweep

    study = SweepSettings(runs=[run], precisions=["int8"] if fp32_by_snr else ["fp32", "int8"], calib_sizes=sizes,
                          calib_methods=["minmax", "percentile", "entropy"], snrs=[None, -4.0],
                          reference_eager=False, overhead_ms=0.0, rounds=3, per_round=100)
    sdoc = run_sweep(study, work / "calib-sizes")
    if fp32_by_snr is None:
        fp32_by_snr = _fp32_by_snr(sdoc["candidates"], run)
    rows = [{"backend": r["backend"], "method": r.get("calib_method") or "nncf", "size": r["calib_size"],
             "status": r["status"], "accuracy_by_snr": r.get("accuracy_by_snr"), "accuracy": r.get("accuracy")}
            for r in sdoc["candidates"] if r["precision"] == "int8"]
    out = HERE / "results" / "calibration_sizes.json"
    write_results({"benchmark": "calibration_sizes", "run": run, "date": time.strftime("%Y-%m-%d"),
                   "fp32_accuracy_by_snr": fp32_by_snr, "rows": rows}, out)
    print(f"\nINT8 validation accuracy (mean of clean and -4 dB) by calibration-set size, {run}")
    print(f"{'path':<26}" + "".join(f"{s:>8}" for s in sizes))
    for backend, method in sorted({(r["backend"], r["method"]) for r in rows}):
        cells = []
        for size in sizes:
            r = next(r for r in rows if r["backend"] == backend and r["method"] == method and r["size"] == size)
            cells.append(f"{100 * r['accuracy']:>8.2f}" if r["accuracy"] is not None else f"{'refused':>8}")
        print(f"{backend + ' ' + method:<26}" + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
