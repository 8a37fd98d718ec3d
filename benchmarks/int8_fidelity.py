"""INT8 against FP32 for one run: each calibration method, plain and with the sensitivity fallback.

A model's validation split is often too small to show an INT8 drop of a few
decisions (one castings validation image is 0.45 pt).  The build therefore also
counts how many of FP32's decisions INT8 changes on a larger set that needs no
labels: the validation split plus training inputs not used for calibration.  This
script measures, for the Q/DQ model (ONNX Runtime, the TensorRT path) under each
calibration method and for OpenVINO INT8, the validation accuracy, the share of
decisions changed, and the test accuracy; then the same with ``--max-drop``, where
layers return to float until both the validation drop and the changed share are
within it.  The calibration method is chosen by the fewest changed decisions,
never by test; test is scored once per model, for the record.
Writes benchmarks/results/int8_fidelity.json.

    python benchmarks/int8_fidelity.py --run runs/images/xray-castings-resnet18-w32-s0-l1x3 --max-drop 0.5
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from edge.cli.common import name_list
from results_file import write_results

HERE = Path(__file__).resolve().parent
METHODS = ("minmax", "percentile", "entropy")


def _row(name: str, predict, fp32: dict, agree_x, val, test, seconds: float, **extra) -> dict:
    from edge.quantize.calibration import accuracy, agreement

    row = {"model": name, "validation_accuracy": accuracy(predict, *val),
           "decisions_changed": 1.0 - agreement(predict, agree_x, fp32["decisions"]),
           "test_accuracy": accuracy(predict, *test), "seconds": round(seconds, 1), **extra}
    row["test_drop_pt"] = 100 * (fp32["test_accuracy"] - row["test_accuracy"])
    floated = f", {len(extra['float_nodes'])} nodes float" if extra.get("float_nodes") else ""
    print(f"  {name:<28} validation {100 * row['validation_accuracy']:.2f}%, "
          f"changed {100 * row['decisions_changed']:.2f}%, test {100 * row['test_accuracy']:.2f}% "
          f"({-row['test_drop_pt']:+.2f} pt against fp32){floated}", flush=True)
    return row


def measure(run_dir: Path, max_drop: float, methods: list[str], data: str | None) -> dict:
    from edge.export.build import BuildOptions, quantization_inputs, run_inputs
    from edge.export.onnx_export import export_onnx, onnxruntime_predictor
    from edge.quantize.calibration import accuracy, agreement, decisions
    from edge.quantize.openvino_int8 import compiled_predictor, float_patterns_for, quantize_openvino
    from edge.quantize.qdq import quantize_qdq, sensitivity_fallback
    from edge.train.runs import load_run

    import openvino as ov

    run = load_run(run_dir)
    options = BuildOptions(target="onnxruntime", precision="int8")
    shape, splits = run_inputs(run, data)
    calib, agree_x = quantization_inputs(splits, options)
    val, test = splits["val"], splits["test"]
    print(f"{run_dir}: calibration {calib.shape[0]}, agreement set {agree_x.shape[0]}, validation "
          f"{val[0].shape[0]}, test {test[0].shape[0]}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(run.load_model(), Path(tmp) / "model.onnx", shape)
        predict = onnxruntime_predictor(onnx_path)
        fp32 = {"decisions": decisions(predict, agree_x), "validation_accuracy": accuracy(predict, *val),
                "test_accuracy": accuracy(predict, *test)}
        rows = []
        for method in methods:
            started = time.monotonic()
            path = quantize_qdq(onnx_path, calib, Path(tmp) / f"{method}.onnx", method)
            rows.append(_row(f"qdq {method}", onnxruntime_predictor(path), fp32, agree_x, val, test,
                             time.monotonic() - started, method=method, mode="ptq"))
        chosen = min(rows, key=lambda r: r["decisions_changed"])["method"]  # the build's rule (auto): ties to the first
        for method in methods:
            started = time.monotonic()
            result = sensitivity_fallback(
                onnx_path, calib, Path(tmp) / f"{method}-fb.onnx",
                lambda p: accuracy(onnxruntime_predictor(p), *val), max_drop, method,
                agreement=lambda p: agreement(onnxruntime_predictor(p), agree_x, fp32["decisions"]))
            rows.append(_row(f"qdq {method} --max-drop", onnxruntime_predictor(result.path), fp32, agree_x, val,
                             test, time.monotonic() - started, method=method, mode="sensitivity_fallback",
                             float_nodes=result.float_nodes, within_budget=result.within_budget))
        started = time.monotonic()
        xml = quantize_openvino(onnx_path, calib, Path(tmp) / "ov.xml",
                                float_patterns=float_patterns_for(run.config["model"])).xml
        compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        rows.append(_row("openvino nncf", compiled_predictor(compiled), fp32, agree_x, val, test,
                         time.monotonic() - started, mode="ptq"))
    return {"run": str(run_dir), "calibration_size": int(calib.shape[0]), "agreement_inputs": int(agree_x.shape[0]),
            "validation_inputs": int(val[0].shape[0]), "test_inputs": int(test[0].shape[0]),
            "fp32": {k: v for k, v in fp32.items() if k != "decisions"},
            "chosen_calibration": chosen, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", required=True, help="trained run (repeatable)")
    parser.add_argument("--max-drop", type=float, default=0.5, metavar="PT", help="budget of the fallback, in points")
    parser.add_argument("--methods", type=name_list, default=",".join(METHODS),
                        help="calibration methods of the Q/DQ model")
    parser.add_argument("--data", default=None, help="the runs' data folder, if it moved")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "int8_fidelity.json")
    args = parser.parse_args(argv)
    methods = args.methods
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown calibration methods {unknown}; choose from {', '.join(METHODS)}")
    missing = [str(r) for r in args.run if not (r / "config.json").is_file()]
    if missing:
        parser.error(f"not a trained run (no config.json): {', '.join(missing)}")
    import onnxruntime
    import openvino

    results = [measure(run, args.max_drop / 100.0, methods, args.data) for run in args.run]
    doc = {"benchmark": "int8_fidelity", "date": time.strftime("%Y-%m-%d"),
           "machine": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                       "onnxruntime": onnxruntime.__version__, "openvino": openvino.get_version()},
           "protocol": "calibration from the training split (the build's seeded draw); decisions compared with "
                       "FP32 on the validation split and uncalibrated training inputs; the calibration method is "
                       "chosen by the fewest changed decisions; the test split is scored once per model and "
                       "chooses nothing",
           "max_drop_pt": args.max_drop, "runs": results}
    write_results(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
