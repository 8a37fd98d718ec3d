"""Explicit INT8 for TensorRT: a Q/DQ ONNX that TensorRT 8.6-11 builds without a calibrator.

Built with ONNX Runtime's static quantizer in QDQ format, configured for TensorRT:
symmetric INT8 (every zero point 0), per-channel weight scales on the output-channel
axis, per-tensor activation scales, Q/DQ only on the inputs of Conv / Gemm / MatMul
and of the residual Adds, biases left in float.  The DRSN threshold sub-network
(Abs, ReduceMean, Gemm, Sigmoid, Mul inside each shrinkage) stays float unless
asked otherwise.  :func:`check_qdq_graph` states each rule as a test can check it;
:func:`sensitivity_fallback` returns the nodes that cost most accuracy to float
until the drop is within a budget, judged on the validation split's accuracy and,
where given, on how many decisions differ from FP32 on a larger unlabelled set.
The Q/DQ model runs on ONNX Runtime's CPU provider, which is how its accuracy is
measured here.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edge.quantize.entropy import histogram_ranges

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "Add")
#: Entropy calibration as TensorRT's IInt8EntropyCalibrator2 does it: a 2,048-bin histogram, searched
#: for the clip whose 128-level copy loses least (KL divergence).  ONNX Runtime's own default (128 bins
#: for 128 levels) leaves nothing to search and returns the full range, minmax under another name, and
#: its quantize_static does not pass bin counts on; so the ranges are computed here and handed over.
ENTROPY_BINS, ENTROPY_LEVELS = 2048, 128


def _namespace(node) -> str:
    return next((p.value for p in node.metadata_props if p.key == "namespace"), "")


def is_threshold_node(node) -> bool:
    """Inside a shrinkage module (the threshold sub-network and the thresholding itself)."""
    return ".shrink" in _namespace(node)


def is_residual_add(node, initializers: set[str]) -> bool:
    """An Add of two activations in a residual unit's own forward (not inside its shrinkage)."""
    return (node.op_type == "Add" and not is_threshold_node(node) and "ResidualUnit" in _namespace(node)
            and not any(i in initializers for i in node.input))


def float_nodes(model, keep_threshold_float: bool = True) -> list[str]:
    """Nodes of the quantized op types that must stay float: non-residual Adds, threshold Gemms."""
    initializers = {i.name for i in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        if node.op_type == "Add" and not is_residual_add(node, initializers):
            keep.append(node.name)
        elif keep_threshold_float and is_threshold_node(node):
            keep.append(node.name)
    return keep


class CalibrationReader:
    """ONNX Runtime calibration reader over preprocessed inputs, one sample per batch."""

    def __init__(self, x: np.ndarray, name: str):
        self._items = iter([{name: x[i:i + 1]} for i in range(x.shape[0])])

    def get_next(self):
        return next(self._items, None)

    def rewind(self):  # not needed: ORT reads once
        pass


def _calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[method]


def tensor_ranges(onnx_path: str | Path, calibration: np.ndarray, method: str = "entropy",
                  percentile: float = 99.999, op_types: tuple[str, ...] | None = None) -> dict[str, float]:
    """Symmetric dynamic range (max |x|) of the activations of the graph, calibrated on ``calibration``.

    Every activation, or those around ``op_types`` only (their inputs and outputs).
    """
    import onnx
    from onnxruntime.quantization.calibrate import create_calibrator

    calibrate = _calibration_method(method)
    input_name = onnx.load(str(onnx_path)).graph.input[0].name
    options = {"symmetric": True, "percentile": percentile}
    if method == "entropy":
        options |= {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_LEVELS}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(str(onnx_path), op_types_to_calibrate=list(op_types) if op_types else None,
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=calibrate, extra_options=options)
        calibrator.collect_data(CalibrationReader(calibration, input_name))
        if method == "entropy":  # ONNX Runtime's histograms, searched in numpy (edge.quantize.entropy)
            return histogram_ranges(calibrator.collector.histogram_dict, ENTROPY_LEVELS)
        data = calibrator.compute_data()
    return {name: float(max(np.abs(value.range_value[0]).max(), np.abs(value.range_value[1]).max()))
            for name, value in data.data.items()}


def quantize_qdq(onnx_path: str | Path, calibration: np.ndarray, out_path: str | Path, method: str = "minmax",
                 keep_threshold_float: bool = True, exclude: tuple[str, ...] = (),
                 percentile: float = 99.999, ranges: dict[str, float] | None = None) -> Path:
    """Write the Q/DQ INT8 model of ``onnx_path`` to ``out_path``.

    ``ranges``: entropy ranges already computed by :func:`tensor_ranges` for this model and
    calibration set (they take a while; the sensitivity fallback quantizes many times); the
    other methods ignore them.
    """
    import logging

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    calibrate = _calibration_method(method)
    overrides = {}
    if method == "entropy":  # ranges computed with TensorRT's bins (see ENTROPY_BINS), passed as overrides
        ranges = ranges if ranges is not None else tensor_ranges(onnx_path, calibration, "entropy",
                                                                 op_types=QUANTIZED_OPS)
        overrides = {name: [{"rmin": np.float32(-r), "rmax": np.float32(r)}] for name, r in ranges.items()}
        calibrate = _calibration_method("minmax")
    model = onnx.load(str(onnx_path))
    input_name = model.graph.input[0].name
    excluded = sorted(set(float_nodes(model, keep_threshold_float)) | set(exclude))
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # ORT's pre-processing advice
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(onnx_path), str(out_path), CalibrationReader(calibration, input_name),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
            reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=calibrate,
            extra_options={"TensorQuantOverrides": overrides,
                           "ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                           "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
                           "CalibPercentile": percentile, "CalibTensorRangeSymmetric": True,
                           "QDQOpTypePerChannelSupportToAxis": {"Gemm": 0, "MatMul": 1},
                           "CalibStridedMinMax": None, "CalibIntermediateOutputPath": str(Path(tmp) / "aug.onnx")},
        )
    model = onnx.load(str(out_path))
    _float_for_other_consumers(model, keep_threshold_float)
    onnx.save(model, str(out_path))
    return Path(out_path)


def choose_calibration(onnx_path: str | Path, calibration: np.ndarray, out_path: str | Path,
                       agreement: Callable[[Path], float], keep_threshold_float: bool = True,
                       entropy_ranges: dict[str, float] | None = None) -> tuple[str, dict[str, float]]:
    """Quantize with every method and keep at ``out_path`` the Q/DQ model that changes fewest of FP32's
    decisions; returns its method and each method's share.

    ``agreement`` is the build's (model path -> share of its agreement set decided as FP32
    decides; no test inputs).  Ties go to the earlier of :data:`CALIBRATION_METHODS`.
    ``entropy_ranges``: from :func:`tensor_ranges`, when the caller needs them again afterwards.
    """
    changed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in CALIBRATION_METHODS:
            path = quantize_qdq(onnx_path, calibration, Path(tmp) / f"{method}.onnx", method, keep_threshold_float,
                                ranges=entropy_ranges)
            changed[method] = 1.0 - agreement(path)
        chosen = min(CALIBRATION_METHODS, key=changed.__getitem__)
        shutil.copyfile(Path(tmp) / f"{chosen}.onnx", out_path)
    return chosen, changed


def _allowed_consumer(node, initializers: set[str], keep_threshold_float: bool) -> bool:
    if keep_threshold_float and is_threshold_node(node):
        return False
    return node.op_type in ("Conv", "Gemm", "MatMul") or is_residual_add(node, initializers)


def _float_for_other_consumers(model, keep_threshold_float: bool) -> None:
    """Give consumers other than Conv/Gemm/MatMul/residual Add the float tensor, not its Q/DQ copy.

    ONNX Runtime shares one Q/DQ pair among all consumers of a tensor; TensorRT wants the
    pair only in front of the ops it runs in INT8 (here, e.g., a BatchNormalization that
    reads the same residual sum stays float).  Pairs left without consumers are removed.
    """
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue  # a weight: constant int8 -> DQ
        for node in graph.node:
            if dq.output[0] in node.input and not _allowed_consumer(node, initializers, keep_threshold_float):
                for k, name in enumerate(node.input):
                    if name == dq.output[0]:
                        node.input[k] = q.input[0]
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)


def check_qdq_graph(path: str | Path, keep_threshold_float: bool = True, float_nodes: tuple[str, ...] = ()) -> list[str]:
    """Every violation of the TensorRT Q/DQ rules in the model at ``path`` (empty when it complies).

    ``float_nodes`` are nodes deliberately left in float (by the sensitivity fallback).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    problems = []
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            if len(n.input) < 3 or n.input[2] not in inits:
                problems.append(f"{n.name}: no constant zero point")
            else:
                zp = inits[n.input[2]]
                if zp.dtype != np.int8 or np.any(zp != 0):
                    problems.append(f"{n.name}: zero point must be int8 0 (symmetric), got {zp.dtype} {zp.ravel()[:4]}")
        if n.op_type != "DequantizeLinear":
            continue
        scale = inits.get(n.input[1])
        weight = n.input[0] in inits
        users = consumers.get(n.output[0], [])
        for user in users:
            allowed = user.op_type in ("Conv", "Gemm", "MatMul") or is_residual_add(user, set(inits))
            if not allowed:
                problems.append(f"{n.name}: feeds {user.op_type} {user.name}, not Conv/Gemm/MatMul or a residual Add")
            if keep_threshold_float and is_threshold_node(user):
                problems.append(f"{n.name}: quantizes {user.name} in the threshold sub-network")
        if weight:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            w = inits[n.input[0]]
            user = users[0] if users else None
            out_axis = 0
            if user is not None and user.op_type == "Gemm":
                out_axis = 0 if next((a.i for a in user.attribute if a.name == "transB"), 0) else 1
            if scale is None or scale.ndim != 1 or scale.shape[0] != w.shape[out_axis] or axis != out_axis:
                problems.append(f"{n.name}: weight scales must be per output channel (axis {out_axis}, "
                                f"{w.shape[out_axis]} scales)")
        elif scale is None or scale.size != 1:
            src = producers.get(n.input[0])
            if src is None or src.op_type == "QuantizeLinear":
                problems.append(f"{n.name}: activation scale must be per tensor")
    for n in graph.node:
        quantizable = n.op_type in ("Conv", "Gemm", "MatMul") and n.name not in float_nodes \
            and not (keep_threshold_float and is_threshold_node(n))
        if quantizable:
            data_inputs = n.input[:2]
            if not all(i in producers and producers[i].op_type == "DequantizeLinear" for i in data_inputs):
                problems.append(f"{n.name}: {n.op_type} inputs are not all quantized")
    return problems


@dataclass
class FallbackResult:
    path: Path
    accuracy_fp32: float
    accuracy_int8: float
    float_nodes: list[str] = field(default_factory=list)
    ranking: list[tuple[str, float]] = field(default_factory=list)   # node, score regained when float
    within_budget: bool = True
    agreement: float | None = None    # share of the agreement set decided as FP32 decides


def sensitivity_fallback(onnx_path: str | Path, calibration: np.ndarray, out_path: str | Path,
                         validate: Callable[[Path], float], max_drop: float, method: str = "minmax",
                         keep_threshold_float: bool = True,
                         agreement: Callable[[Path], float] | None = None,
                         ranges: dict[str, float] | None = None) -> FallbackResult:
    """Quantize; while the drop exceeds ``max_drop``, return the most costly node to float.

    ``validate`` (model path -> accuracy on the validation split; the same function the
    OpenVINO path uses) must drop by at most ``max_drop``.  A small validation split
    cannot see a drop of a few decisions (one image in 224 is 0.45 pt), so ``agreement``
    (model path -> share of a larger, unlabelled set of inputs decided as FP32 decides)
    may add a second test: at most ``max_drop`` of those decisions may change.  An
    accuracy drop can never exceed the share of changed decisions.  Nodes are ranked
    once by what each alone regains when left float (agreement when given, else
    accuracy); then the worst are returned to float one by one, re-measured each time.
    ``ranges``: entropy ranges the caller already has (see :func:`quantize_qdq`).
    """
    import onnx

    out_path = Path(out_path)
    score = agreement or validate

    def measure(path: Path) -> tuple[float, float | None]:
        return validate(path), (agreement(path) if agreement else None)

    def within(acc: float, agreed: float | None) -> bool:
        return base - acc <= max_drop and (agreed is None or 1.0 - agreed <= max_drop)

    base = validate(Path(onnx_path))
    if method == "entropy" and ranges is None:
        ranges = tensor_ranges(onnx_path, calibration, method, op_types=QUANTIZED_OPS)

    def quantize(path: Path, exclude: tuple[str, ...] = ()) -> None:
        quantize_qdq(onnx_path, calibration, path, method, keep_threshold_float, exclude, ranges=ranges)

    quantize(out_path)
    acc, agreed = measure(out_path)
    result = FallbackResult(out_path, base, acc, within_budget=within(acc, agreed), agreement=agreed)
    if result.within_budget:
        return result
    current = agreed if agreement else acc
    model = onnx.load(str(onnx_path))
    fixed = set(float_nodes(model, keep_threshold_float))
    candidates = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name not in fixed]
    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / "trial.onnx"
        for name in candidates:
            quantize(trial, (name,))
            result.ranking.append((name, score(trial) - current))
    result.ranking.sort(key=lambda item: -item[1])
    for name, _ in result.ranking:
        result.float_nodes.append(name)
        quantize(out_path, tuple(result.float_nodes))
        result.accuracy_int8, result.agreement = measure(out_path)
        if within(result.accuracy_int8, result.agreement):
            break
    result.within_budget = within(result.accuracy_int8, result.agreement)
    return result
