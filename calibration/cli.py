"""`drsn-edge calibrate`: the sweep, the choice for a budget, and the on-device measurement."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.cli.common import non_negative_float, output_path, port_spec, positive_float, probability, share_of_all

EPILOG = """\
examples:
  # sweep two runs: fp32/int8 on OpenVINO and ONNX Runtime, 1 and 2 threads, clean and -4 dB
  drsn-edge calibrate --runs runs/drsn runs/plain --threads 1,2 --snr none,-4 --out calib/cwru
  # the most accurate candidate that decides every window within 0.5 ms, 20 % margin
  drsn-edge calibrate --out calib/cwru --budget-ms 0.5
  # ... and build its bundle
  drsn-edge calibrate --out calib/cwru --budget-ms 0.5 --build dist/chosen
  # on the gateway: the installed bundle under the real runtime (simulator on a pty without --port)
  drsn-edge calibrate --bundle /opt/drsn-edge/current --on-device --seconds 60

A sweep builds every candidate through the normal build path, scores it on each run's
validation windows (never the test segments) and times it alone in a fresh process
pinned to its cores.  Results are appended to OUT/results.jsonl as they come, so an
interrupted sweep resumes where it stopped; OUT/calibration.json, OUT/pareto.png and
OUT/report.html hold the outcome.  TensorRT candidates are timed only where TensorRT
and a GPU exist; elsewhere the report lists the commands to run on the target.
"""


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _rates(text: str) -> list[float]:
    from calibration.candidates import CalibrationError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CalibrationError(f"--prune-rates expects comma-separated fractions, got {text!r}") from None


def _words(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="accuracy against latency for candidate models; choose one for a budget",
                       description="Sweep candidates (run x backend x precision x threads x batch x calibration), "
                                   "measure accuracy and latency on this device, pick the best for a latency budget.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=None,
                   help="training runs to sweep; with --on-device, the run the bundle was built from, whose "
                        "held-out data the simulator streams")
    p.add_argument("--out", type=output_path, default=None, help="sweep directory (results.jsonl, calibration.json, "
                                                           "pareto.png, report.html)")
    p.add_argument("--backends", type=_words, default=["openvino", "onnxruntime"],
                   help="openvino,onnxruntime,tensorrt (default openvino,onnxruntime)")
    p.add_argument("--precisions", type=_words, default=["fp32", "int8"], help="fp32,fp16,int8 (default fp32,int8)")
    p.add_argument("--threads", type=_ints, default=[1], help="inference threads, e.g. 1,2 (default 1)")
    p.add_argument("--batch", type=_ints, default=[1], help="batch sizes, e.g. 1,8 (default 1)")
    p.add_argument("--prune-rates", default="0", help="image runs: also L1-pruned copies at these rates, "
                                                         "e.g. 0,0.3,0.5 (default 0: as trained)")
    p.add_argument("--prune-epochs", type=int, default=5, help="fine-tuning epochs after pruning (default 5)")
    p.add_argument("--calib-sizes", type=_ints, default=[256], help="INT8 calibration windows, e.g. 64,256,1024")
    p.add_argument("--calib-methods", type=_words, default=["minmax"],
                   help="Q/DQ calibration: minmax,percentile,entropy (default minmax; OpenVINO uses NNCF's own)")
    p.add_argument("--snr", default="none,-4", help="validation SNRs in dB, 'none' = clean (default none,-4)")
    p.add_argument("--noise", default="gaussian", choices=["gaussian", "pink", "laplacian"],
                   help="synthetic noise kind for the SNRs (default gaussian)")
    p.add_argument("--noise-file", type=Path, default=None,
                   help="a recorded background noise from the plant (.npy, .wav or .mat) mixed in at each SNR "
                        "instead of synthetic noise")
    p.add_argument("--data", type=Path, default=None, help="the runs' data folder, if it moved")
    p.add_argument("--jobs", type=int, default=1, help="bundles built and scored at once (latency always runs alone)")
    p.add_argument("--rounds", type=int, default=10, help="latency: timed rounds per candidate (default 10)")
    p.add_argument("--per-round", type=int, default=200, help="latency: calls per round (default 200)")
    p.add_argument("--no-eager", action="store_true", help="skip the PyTorch eager reference")
    p.add_argument("--overhead-ms", type=non_negative_float, default=None,
                   help="runtime overhead to add to p99 (default: measured with the real runtime on a pty)")
    p.add_argument("--overhead-seconds", type=positive_float, default=20.0, help="length of that measurement (default 20)")
    p.add_argument("--budget-ms", type=positive_float, default=None, help="choose the most accurate candidate that fits")
    p.add_argument("--margin", type=probability, default=0.2, help="share of the budget kept free (default 0.2)")
    p.add_argument("--min-accuracy", type=share_of_all, default=None, help="lowest acceptable accuracy, e.g. 0.98")
    p.add_argument("--build", type=output_path, default=None, metavar="DIR", help="build the chosen candidate's bundle here")
    p.add_argument("--bundle", type=Path, default=None, help="with --on-device: the bundle to measure")
    p.add_argument("--on-device", action="store_true", help="measure --bundle under the real runtime here")
    p.add_argument("--port", type=port_spec, default=None, help="with --on-device: the sensor's port (default: simulator on a pty)")
    p.add_argument("--seconds", type=positive_float, default=60.0, help="with --on-device: how long to measure (default 60)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run_calibrate)


def noise_kind(args: argparse.Namespace) -> str:
    """``--noise`` or, when given, ``file:`` + ``--noise-file`` (checked now, not in the middle of a sweep)."""
    if args.noise_file is None:
        return args.noise
    from edge.data.noise import RECORDED_PREFIX, load_noise_recording

    load_noise_recording(str(args.noise_file.resolve()))
    return RECORDED_PREFIX + str(args.noise_file.resolve())


def run_calibrate(args: argparse.Namespace) -> int:
    from calibration.candidates import CalibrationError

    if args.on_device:
        return _on_device(args)
    if args.out is None:
        raise CalibrationError("--out is required: the sweep directory to write or read")
    if args.budget_ms is None and (args.min_accuracy is not None or args.build):
        raise CalibrationError("--min-accuracy and --build choose among the candidates for a budget: give "
                               "--budget-ms too")
    if args.runs:
        from calibration.sweep import SweepSettings, run_sweep
        from edge.data.noise import parse_snr_list

        settings = SweepSettings(runs=[str(r) for r in args.runs], backends=args.backends,
                                 precisions=args.precisions, threads=args.threads, batches=args.batch,
                                 calib_sizes=args.calib_sizes, calib_methods=args.calib_methods,
                                 prune_rates=_rates(args.prune_rates), prune_epochs=args.prune_epochs,
                                 snrs=parse_snr_list(args.snr), noise_kind=noise_kind(args),
                                 data=str(args.data) if args.data else None, jobs=args.jobs, rounds=args.rounds,
                                 per_round=args.per_round, reference_eager=not args.no_eager,
                                 overhead_ms=args.overhead_ms, overhead_seconds=args.overhead_seconds)
        doc = run_sweep(settings, args.out, progress=not args.quiet)
        _print_table(doc)
        print(f"wrote {args.out}/calibration.json, pareto.png, report.html")
    else:
        path = args.out / "calibration.json"
        if not path.is_file():
            raise CalibrationError(f"{path} does not exist: run a sweep first (--runs ... --out {args.out})")
        doc = json.loads(path.read_text())
    if args.budget_ms is not None:
        return _choose(doc, args)
    return 0


def _print_table(doc: dict) -> None:
    front = set(doc["pareto_front"])
    print(f"{'candidate':<58}{'accuracy':>9}{'p50 ms':>9}{'p99 ms':>9}{'RSS MB':>8}  status")
    for r in sorted(doc["candidates"], key=lambda r: (-(r.get("accuracy") or 0), r.get("p99_ms") or 1e9)):
        acc = f"{100 * r['accuracy']:.2f}" if r.get("accuracy") is not None else "-"
        p50 = f"{r['p50_ms']:.3f}" if "p50_ms" in r else "-"
        p99 = f"{r['p99_ms']:.3f}" if "p99_ms" in r else "-"
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        status = ("front" if r["key"] in front else "") + (" reference" if r["reference_only"] else "")
        if r["status"] != "ok":
            status = r["status"] + (f": {r['reason'][:60]}" if r.get("reason") else "")
        print(f"{r['key']:<58}{acc:>9}{p50:>9}{p99:>9}{rss:>8}  {status.strip()}")
    print(f"runtime overhead {doc['runtime_overhead']['overhead_ms']:.3f} ms ({doc['runtime_overhead']['source']})")


def naive_choice(doc: dict) -> dict | None:
    """PyTorch eager FP32 of the most accurate run, one thread, batch 1: what one deploys without calibrating."""
    eager = [r for r in doc["candidates"] if r["reference_only"] and r["status"] == "ok" and "p99_ms" in r
             and r["batch"] == 1]
    return max(eager, key=lambda r: (r["accuracy"], -r["threads"], -r["p99_ms"])) if eager else None


def _choose(doc: dict, args: argparse.Namespace) -> int:
    from calibration.sweep import build_command, choose

    choice = choose(doc, args.budget_ms, args.margin, args.min_accuracy)
    naive = naive_choice(doc)
    print(f"\nbudget {args.budget_ms:g} ms per window: {choice.reason}")
    if naive:
        fits = naive["p99_ms"] <= choice.limit_ms
        print(f"  naive choice   {naive['key']}: accuracy {100 * naive['accuracy']:.2f}%, p99 "
              f"{naive['p99_ms']:.3f} ms ({'fits' if fits else 'does not fit'})")
    if choice.chosen is None:
        print("  nearest candidates:" if choice.nearest else
              "  no candidate was measured here: the table says why for each")
        for r in choice.nearest:
            print(f"    {r['key']}: accuracy {100 * r['accuracy']:.2f}%, p99 {r['p99_ms']:.3f} ms")
        return 1
    r = choice.chosen
    print(f"  chosen         {r['key']}: accuracy {100 * r['accuracy']:.2f}% "
          f"({', '.join(f'{k}: {100 * v:.2f}%' for k, v in r['accuracy_by_snr'].items())}), "
          f"p99 {r['p99_ms']:.3f} ms, {r['threads']} thread(s), batch {r['batch']}")
    out = args.build or Path("dist") / r["bundle_key"]
    command = build_command(r, str(out))
    print(f"  build it with: {command}")
    print(f"  run it with:   drsn-edge run --bundle {out} --budget-ms {args.budget_ms:g} --threads {r['threads']} "
          "--on-miss reject --port PORT")
    if args.build:
        from edge.export.build import BuildOptions, build_bundle

        build_bundle(r["run"], args.build, BuildOptions(target=r["backend"], precision=r["precision"],
                                                        calib_size=r.get("calib_size") or 256,
                                                        calib_method=r.get("calib_method") or "minmax",
                                                        budget_ms=args.budget_ms,
                                                        data=str(args.data) if args.data else None))
    return 0


def _on_device(args: argparse.Namespace) -> int:
    from calibration.candidates import CalibrationError
    from calibration.on_device import measure_bundle, recommend

    if args.bundle is None:
        raise CalibrationError("--on-device needs --bundle: the bundle to measure")
    run_dir = args.runs[0] if args.runs else None

    def announce(port: str) -> None:
        streaming = f"streaming the held-out data of {run_dir}" if run_dir else "streaming real data"
        print(f"calibrate: measuring {args.bundle} under the runtime for {args.seconds:g} s on {port}"
              + ("" if args.port else f" (device simulator on a pty, {streaming})"), flush=True)

    summary = measure_bundle(args.bundle, args.seconds, port=args.port, data=args.data, run_dir=run_dir,
                             threads=args.threads[0], announce=announce)
    lat = summary["latency"]
    print(f"decisions {summary['counters']['decisions']}: latency p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} "
          f"ms, p99.9 {lat['p99_9_ms']:.2f} ms, max {lat['max_ms']:.2f} ms; stages (s): "
          + ", ".join(f"{k} {v:.2f}" for k, v in summary["stages_s"].items()))
    rec = recommend(summary, args.margin)
    print(f"recommended: --budget-ms {rec['budget_ms']:g} --on-miss {rec['on_miss']}\n  why: {rec['why']}")
    if rec["caution"]:
        print(f"  caution: {rec['caution']}")
    return 0
