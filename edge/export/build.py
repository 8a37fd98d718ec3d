"""From a training run to a verified bundle: export, quantize, compile, measure, pack, sign.

One call, :func:`build_bundle`; ``build.py`` and ``drsn-edge build`` are thin layers
over it.  Accuracy in the manifest is measured on the run's held-out test segments
through the backend the bundle ships (the Q/DQ model of a TensorRT bundle on ONNX
Runtime's CPU provider, since the engine itself is built on the target).  Whether a
bundle is written is decided on the validation split alone: the test split measures
the bundle, it never chooses it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import edge
from edge.bundle import write_bundle
from edge.bundle.signing import load_private_key
from edge.errors import DrsnEdgeError
from edge.export.onnx_export import (INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx, onnxruntime_predictor,
                                     parity_check)
from edge.quantize.calibration import (accuracy, agreement, agreement_inputs, balanced_subset, dataset_hash,
                                      decisions, model_inputs)
from edge.run_files import split_fingerprint
from edge.train.runs import load_run
from edge.train.vibration import run_splits

TARGETS = ("openvino", "onnxruntime", "tensorrt")
#: Class names that mean "nothing wrong" (in any case, with "-" or " " for "_"): every other
#: class rejects unless told otherwise.
GOOD_CLASSES = ("normal", "class_0", "ok", "good", "healthy", "flawless", "no_defect", "pass")
PRECISIONS = ("fp32", "fp16", "int8")
#: Q/DQ calibration: one method, or "auto": each is tried and the one changing fewest of FP32's decisions kept.
CALIBRATION_CHOICES = ("auto", "minmax", "percentile", "entropy")


class BuildError(DrsnEdgeError):
    """A build that cannot be made as asked."""


@dataclass
class BuildOptions:
    target: str = "openvino"
    precision: str = "int8"
    calib_size: int = 256
    calib_method: str = "auto"            # Q/DQ (TensorRT, ONNX Runtime INT8); auto: fewest decisions changed
    calib_balanced: bool = True
    max_drop: float | None = None         # fraction (0.005 = 0.5 pt); None: plain post-training quantization
    guard_drop: float = 0.01              # refuse a bundle this much less accurate than fp32 (when no max_drop)
    budget_ms: float | None = None        # latency budget in the manifest; default 5 ms a window, 20 ms a tile
    reject_classes: tuple[str, ...] | None = None   # default: every class but "normal"
    seed: int = 0
    data: str | None = None
    legacy_calib_cache: str | None = None  # TensorRT version (e.g. 8601): add an implicit-calibration cache
    agreement_size: int = 4096            # INT8: validation + uncalibrated training inputs compared with FP32

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise BuildError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.precision not in PRECISIONS:
            raise BuildError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.target == "onnxruntime" and self.precision == "fp16":
            raise BuildError("ONNX Runtime's CPU provider has no FP16 kernels; use fp32 or int8")
        if self.calib_method not in CALIBRATION_CHOICES:
            raise BuildError(f"--calib-method must be one of {', '.join(CALIBRATION_CHOICES)}, "
                             f"got {self.calib_method!r}")
        if self.calib_size < 1:
            raise BuildError("--calib-size must be at least 1")
        if self.legacy_calib_cache and (self.target != "tensorrt" or self.precision != "int8"):
            raise BuildError("--legacy-calib-cache goes with --target tensorrt --precision int8")
        if self.legacy_calib_cache and not self.legacy_calib_cache.isdigit():
            raise BuildError(f"--legacy-calib-cache takes a TensorRT version like 8601, got {self.legacy_calib_cache!r}")


def _ov_predictor(path: Path, hint: str | None):
    import openvino as ov

    from edge.quantize.openvino_int8 import compiled_predictor

    config = {"INFERENCE_PRECISION_HINT": hint} if hint else {}
    return compiled_predictor(ov.Core().compile_model(str(path), "CPU", config))


def run_inputs(run, data: str | None = None) -> tuple[tuple[int, ...], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The network's input shape and its preprocessed inputs and labels for train, val and test."""
    cfg = run.config
    pre = cfg["preprocessing"]
    if pre.get("input") == "image":
        from edge.data.preprocess import normalize
        from edge.train.images import run_images

        out = {}
        for name in ("train", "val", "test"):
            x, y = run_images(run, name, data)
            out[name] = (np.ascontiguousarray(normalize(x, pre["normalization"]), dtype=np.float32), y)
        return (cfg["model"]["in_channels"], pre["size"], pre["size"]), out
    splits = run_splits(cfg, {"train": max(pre["window"] // 4, 1), "val": None, "test": None}, data)
    inputs = {name: (model_inputs(x, pre["normalization"]), y) for name, (x, y) in splits.items()}
    return inputs["test"][0].shape[1:], inputs  # (channels, length): a spectrum is half the window


def manifest_preprocessing(pre: dict) -> dict:
    """What the gateway must reproduce: window and hop, or image size and tile geometry."""
    if pre.get("input") == "image":
        return {"input": "image", "size": pre["size"], "tile_lines": pre["size"], "patch_width": pre["size"],
                "normalization": pre["normalization"], "grey": True}
    return {"window": pre["window"], "hop": pre["window"] // 2, "rate_hz": pre["rate_hz"],
            "channel": pre["channel"], "normalization": pre["normalization"]}


def quantization_inputs(splits: dict[str, tuple[np.ndarray, np.ndarray]],
                        options: BuildOptions) -> tuple[np.ndarray, np.ndarray]:
    """The calibration inputs (from the training split, seeded) and the set INT8 decisions are compared on.

    The agreement set is the validation split and training inputs not calibrated on;
    never the test split, which only measures the bundle once it is built.
    """
    rng = np.random.default_rng(options.seed)
    train_x, train_y = splits["train"]
    picks = balanced_subset(train_y, options.calib_size, rng, options.calib_balanced)
    return train_x[picks], agreement_inputs(train_x, picks, splits["val"][0], options.agreement_size, rng)


def default_reject_classes(classes: list[str]) -> list[str]:
    """The classes that reject when the user names none: all but those ``GOOD_CLASSES`` names, so that
    a folder called ``Good`` or ``no-defect`` passes as ``good`` does."""
    return [c for c in classes if c.strip().lower().replace("-", "_").replace(" ", "_") not in GOOD_CLASSES]


def build_bundle(run_dir: str | Path, out: str | Path, options: BuildOptions, key: str | Path | None = None,
                 log=print) -> dict:
    """Build the bundle ``out`` (a directory and ``out.tar.gz``); returns its manifest.

    The signing key is read first: a key that cannot sign is refused before minutes of
    quantization, and a bundle already at ``out`` stays as it was.
    """
    signing_key = load_private_key(key) if key else None
    started = time.monotonic()
    run = load_run(run_dir)
    cfg = run.config
    pre = cfg["preprocessing"]
    classes = cfg["classes"]
    reject = list(options.reject_classes) if options.reject_classes else default_reject_classes(classes)
    unknown = sorted(set(reject) - set(classes))
    if unknown:
        raise BuildError(f"reject classes {unknown} are not classes of this run ({', '.join(classes)})")
    model = run.load_model()
    input_shape, splits = run_inputs(run, options.data)

    calib, agree_x = quantization_inputs(splits, options)
    noun = "images" if pre.get("input") == "image" else "windows"
    val, val_y = splits["val"]
    test, test_y = splits["test"]

    work = Path(tempfile.mkdtemp(prefix="drsn-build-"))
    try:
        onnx_path = export_onnx(model, work / "model.onnx", input_shape)
        parity = parity_check(model, onnx_path, val[:64])
        if not parity.passed:
            raise BuildError(f"ONNX export differs from PyTorch beyond {parity.tolerance}: "
                             f"{parity.max_relative_error}")
        log(f"exported ONNX opset {OPSET}; parity with PyTorch on {parity.samples} real {noun}: "
            + ", ".join(f"{k} {v:.1e}" for k, v in parity.max_relative_error.items()))
        fp32_predict = onnxruntime_predictor(onnx_path)
        fp32_val = accuracy(fp32_predict, val, val_y)
        fp32_decisions = decisions(fp32_predict, agree_x) if options.precision == "int8" else None

        def qdq_agreement(path: Path) -> float:
            return agreement(onnxruntime_predictor(path), agree_x, fp32_decisions)
        files: dict[str, Path] = {}
        backend: dict = {"name": options.target}
        quantization: dict | None = None
        tensorrt: dict | None = None
        known_agreement: float | None = None   # the deployed Q/DQ model's, when choosing it measured it already

        if options.target == "openvino":
            import openvino as ov

            backend |= {"version": ov.get_version(), "device": "CPU", "performance_hint": "LATENCY",
                        "inference_precision_hint": "f32" if options.precision != "fp16" else "f16"}
            xml = work / "model.xml"
            if options.precision == "int8":
                from edge.quantize.openvino_int8 import float_patterns_for, quantize_openvino

                patterns = float_patterns_for(cfg["model"])
                result = quantize_openvino(onnx_path, calib, xml, validation=(val, val_y), max_drop=options.max_drop,
                                           float_patterns=patterns)
                quantization = {"tool": "nncf", "mode": result.mode, "max_drop": options.max_drop,
                                "float_layers": list(patterns), "notes": result.notes,
                                "validation_accuracy_fp32": result.validation_accuracy_fp32,
                                "validation_accuracy_int8": result.validation_accuracy_int8}
            else:
                ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=options.precision == "fp16")
            files = {"model.xml": xml, "model.bin": xml.with_suffix(".bin")}
            model_files = {"model": "model.xml", "weights": "model.bin"}
            predict = _ov_predictor(xml, backend["inference_precision_hint"])
        else:
            deployed = onnx_path
            method, changed_by_method = options.calib_method, None
            if options.precision == "int8":
                from edge.quantize.qdq import (QUANTIZED_OPS, check_qdq_graph, choose_calibration, quantize_qdq,
                                               sensitivity_fallback, tensor_ranges)

                deployed = work / "model.qdq.onnx"
                # Entropy ranges take a while: computed once, for the choice and whatever follows it.
                ranges = (tensor_ranges(onnx_path, calib, "entropy", op_types=QUANTIZED_OPS)
                          if method in ("auto", "entropy") else None)
                if method == "auto":
                    method, changed_by_method = choose_calibration(onnx_path, calib, deployed, qdq_agreement,
                                                                   entropy_ranges=ranges)
                    log(f"calibration {method}: fewest of FP32's decisions changed ("
                        + ", ".join(f"{m} {100 * v:.2f}%" for m, v in changed_by_method.items()) + ")")
                if options.max_drop is not None:
                    fb = sensitivity_fallback(onnx_path, calib, deployed,
                                              lambda p: accuracy(onnxruntime_predictor(p), val, val_y),
                                              options.max_drop, method,
                                              agreement=qdq_agreement, ranges=ranges)
                    known_agreement = fb.agreement
                    quantization = {"tool": "qdq", "mode": "sensitivity_fallback", "float_nodes": fb.float_nodes,
                                    "validation_accuracy_fp32": fb.accuracy_fp32,
                                    "validation_accuracy_int8": fb.accuracy_int8, "within_budget": fb.within_budget}
                else:
                    if changed_by_method is None:  # else the chosen method's model is already there
                        quantize_qdq(onnx_path, calib, deployed, method, ranges=ranges)
                    else:
                        known_agreement = 1.0 - changed_by_method[method]
                    quantization = {"tool": "qdq", "mode": "ptq"}
                violations = check_qdq_graph(deployed, float_nodes=tuple(quantization.get("float_nodes", ())))
                if violations:
                    raise BuildError("the Q/DQ model breaks the TensorRT rules: " + "; ".join(violations[:5]))
                quantization |= {"symmetric": True, "weights": "per-channel", "activations": "per-tensor",
                                 "calibration_method": method, "threshold_subnetwork": "float"}
                if changed_by_method:
                    quantization["calibration_choice"] = {"decisions_changed": changed_by_method,
                                                          "chosen": method, "rule": "fewest decisions changed"}
            name = "model.qdq.onnx" if options.precision == "int8" else "model.onnx"
            files = {name: deployed}
            model_files = {"model": name}
            predict = onnxruntime_predictor(deployed)
            import onnxruntime as ort

            backend |= {"version": ort.__version__, "device": "CPU"}
            if options.target == "tensorrt":
                from edge.compile.tensorrt import TrtBuildSettings, batch_profile, trtexec_command

                settings = TrtBuildSettings(precision=options.precision,
                                            batch=batch_profile(manifest_preprocessing(pre)))
                tensorrt = {"onnx_file": name, "engine_file": f"model.{options.precision}.engine",
                            "build_settings": settings.to_dict(),
                            "note": "engines are built on the target from this ONNX (drsn-edge compile-trt)"}
                tensorrt["trtexec"] = trtexec_command({"input": {"shape": ["N", *input_shape]},
                                                       "tensorrt": tensorrt}, tensorrt["engine_file"], settings)
                if options.legacy_calib_cache and options.precision == "int8":
                    from edge.quantize.trt_cache import write_calibration_cache

                    cache = write_calibration_cache(onnx_path, calib, work / "model.calib.cache",
                                                    options.legacy_calib_cache, method)
                    files |= {"model.onnx": onnx_path, "model.calib.cache": cache}
                    tensorrt["legacy_implicit_calibration"] = {
                        "onnx_file": "model.onnx", "cache_file": "model.calib.cache",
                        "tensorrt_version": options.legacy_calib_cache, "method": method,
                        "note": "LEGACY (TensorRT <= 10, DLA): trtexec --onnx=model.onnx --int8 "
                                "--calib=model.calib.cache; the Q/DQ model is the supported path"}
                backend = {"name": "tensorrt", "device": "GPU", "version": "built on target",
                           "accuracy_measured_with": f"onnxruntime {ort.__version__} CPU"}
        deployed_val = accuracy(predict, val, val_y)
        if fp32_decisions is not None:
            agreed = known_agreement if known_agreement is not None else agreement(predict, agree_x, fp32_decisions)
            quantization = (quantization or {}) | {"decisions_changed": {
                "share": 1.0 - agreed, "inputs": int(agree_x.shape[0]),
                "set": "validation split and training inputs not used for calibration; no test inputs"}}
            log(f"int8 changes {100 * (1.0 - agreed):.2f}% of FP32's decisions on {agree_x.shape[0]} validation "
                f"and training {noun} (no test {noun})")
        # What scored the deployed model: a TensorRT engine is built on the gateway, so its ONNX ran here.
        scored_as = (f"{options.precision} tensorrt (its ONNX on {backend['accuracy_measured_with']}; the engine "
                     "is built on the gateway)" if options.target == "tensorrt" else
                     f"{options.precision} {options.target}")
        log(f"validation accuracy: fp32 {100 * fp32_val:.2f}%, {scored_as} {100 * deployed_val:.2f}% "
            f"({val.shape[0]} {noun})")
        # The bundle is accepted or refused on validation; the test split only measures what was accepted
        # (a refused candidate's test figure would invite choosing settings on it).
        allowed = options.max_drop if options.max_drop is not None else options.guard_drop
        if fp32_val - deployed_val > allowed + 1e-9:
            raise BuildError(
                f"the {options.precision} {options.target} model scores {100 * deployed_val:.2f}% on the validation "
                f"{noun} against {100 * fp32_val:.2f}% in fp32, more than {100 * allowed:.1f} pt lower; "
                "no bundle written. Try --max-drop (layers return to float), another --calib-method, "
                "or --precision fp32")
        fp32_test, deployed_test = accuracy(fp32_predict, test, test_y), accuracy(predict, test, test_y)
        log(f"held-out test accuracy: fp32 {100 * fp32_test:.2f}%, {scored_as} {100 * deployed_test:.2f}% "
            f"({test.shape[0]} {noun})")
        manifest = {
            "drsn_edge_version": edge.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": {"family": cfg["model"]["name"], "config": cfg["model"], "files": model_files,
                      "source_run": str(run.path), "split_sha256": split_fingerprint(run.split)},
            "task": cfg.get("task"),
            "classes": classes,
            "reject_classes": reject,
            "input": {"name": INPUT_NAME, "shape": ["N", *input_shape], "dtype": "float32",
                      "layout": "N,C,H,W" if len(input_shape) == 3 else "N,C,L"},
            "output": {"name": OUTPUT_NAME, "shape": ["N", len(classes)], "kind": "logits"},
            "preprocessing": manifest_preprocessing(pre),
            "precision": options.precision,
            "backend": backend,
            "tensorrt": tensorrt,
            "quantization": quantization,
            "calibration": {"size": int(calib.shape[0]), "balanced": options.calib_balanced,
                            "split": "train", "sha256": dataset_hash(calib), "seed": options.seed},
            "accuracy": {"split": "test", "windows": int(test.shape[0]), "fp32": fp32_test,
                         options.precision: deployed_test, "parity": parity.to_dict(),
                         "validation": {"windows": int(val.shape[0]), "fp32": fp32_val,
                                        options.precision: deployed_val, "max_drop": allowed}},
            "runtime": {"budget_ms": options.budget_ms or (20.0 if pre.get("input") == "image" else 5.0),
                        "on_miss": "reject", "threshold": None},
        }
        out = write_bundle(out, files, manifest, private_key=signing_key)
        log(f"wrote {out}/ and {out.name}.tar.gz in {time.monotonic() - started:.0f} s"
            + (" (signed)" if key else " (unsigned: pass --key to sign)"))
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)
