"""OpenVINO INT8 with NNCF post-training quantization, optionally accuracy-controlled.

One call, a calibration set, a validation set: :func:`quantize_openvino` returns an
INT8 OpenVINO model.  With ``max_drop`` it uses NNCF's accuracy-controlled mode,
which returns the layers that cost most accuracy to float until the drop on the
validation set is within ``max_drop`` (absolute, as a fraction: 0.005 = 0.5 pt).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.quantize.calibration import accuracy

#: Kept in float for shrinkage networks: the threshold sub-network (as on the TensorRT path) and the
#: convolution that feeds each soft threshold.  OpenVINO 2026.4's low-precision transformations turn
#: an INT8 convolution followed by ``relu(x - tau) - relu(-x - tau)`` (tau computed from x itself)
#: into all zeros; with these layers in float the INT8 model matches FP32 accuracy.
SHRINKAGE_FLOAT_PATTERNS: tuple[str, ...] = (r".*\.shrink.*", r".*\.conv2/.*")

#: DCA-CNN: with its fusion head (BN and multi-scale convolutions on the DCA features) in INT8,
#: OpenVINO 2026.4.1 with NNCF 3.4.0 scores 37 % on validation windows where FP32 and the ONNX
#: Runtime Q/DQ model score 100 %; keeping any one block of the head in float does not mend it,
#: keeping the head in float does.  The two branches (most of the work) stay INT8.
DCA_FLOAT_PATTERNS: tuple[str, ...] = (r".*fusion_cnn.*",)


def float_patterns_for(model_config: dict) -> tuple[str, ...]:
    """The layers NNCF leaves in float for a model family (see the notes above), none for the rest;
    for an ensemble, those of each of its members."""
    if model_config.get("name") == "ensemble":
        return tuple(dict.fromkeys(p for member in model_config["members"] for p in float_patterns_for(member)))
    if model_config.get("name") == "dca-cnn":
        return DCA_FLOAT_PATTERNS
    if model_config.get("shrinkage", "none") != "none":
        return SHRINKAGE_FLOAT_PATTERNS
    return ()


@dataclass
class OpenVinoInt8Result:
    xml: Path
    mode: str                      # "ptq" or "accuracy_control"
    calibration_size: int
    validation_accuracy_fp32: float | None = None
    validation_accuracy_int8: float | None = None
    notes: list[str] = field(default_factory=list)


def compiled_predictor(compiled):
    """A batch -> logits function over an OpenVINO compiled model."""
    request = compiled.create_infer_request()

    def predict(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()
    return predict


def quantize_openvino(onnx_path: str | Path, calibration: np.ndarray, out_xml: str | Path,
                      validation: tuple[np.ndarray, np.ndarray] | None = None, max_drop: float | None = None,
                      fast: bool = True, float_patterns: tuple[str, ...] = ()) -> OpenVinoInt8Result:
    """Quantize the FP32 ONNX model to INT8 and save OpenVINO IR at ``out_xml``.

    ``calibration`` are preprocessed model inputs (N, C, L) from the training split;
    ``float_patterns`` are regular expressions of layer names NNCF leaves in float.
    """
    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.ERROR)
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    calib = nncf.Dataset([calibration[i:i + 1] for i in range(calibration.shape[0])])
    result = OpenVinoInt8Result(xml=Path(out_xml), mode="ptq", calibration_size=int(calibration.shape[0]))
    scope = {"ignored_scope": nncf.IgnoredScope(patterns=list(float_patterns), validate=False)} if float_patterns \
        else {}
    if float_patterns:
        result.notes.append("kept in float: layers matching " + ", ".join(float_patterns))
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    if max_drop is not None:
        if validation is None:
            raise ValueError("accuracy-controlled quantization needs a validation set")
        vx, vy = validation
        val = nncf.Dataset([(vx[i:i + 64], vy[i:i + 64]) for i in range(0, vx.shape[0], 64)],
                           lambda item: item[0])

        def validate(compiled, data) -> float:
            predict = compiled_predictor(compiled)
            hits = total = 0
            for x, y in data:
                hits += int(np.sum(predict(x).argmax(1) == y))
                total += y.shape[0]
            return hits / max(total, 1)

        quantized = nncf.quantize_with_accuracy_control(
            model, calib, val, validate, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
            subset_size=int(calibration.shape[0]), fast_bias_correction=fast, **scope)
        result.mode = "accuracy_control"
    else:
        quantized = nncf.quantize(model, calib, subset_size=int(calibration.shape[0]), fast_bias_correction=fast,
                                  **scope)
    Path(out_xml).parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    if validation is not None:
        vx, vy = validation
        result.validation_accuracy_fp32 = accuracy(compiled_predictor(core.compile_model(model, "CPU", f32)), vx, vy)
        result.validation_accuracy_int8 = accuracy(
            compiled_predictor(core.compile_model(core.read_model(str(out_xml)), "CPU", f32)), vx, vy)
    return result
