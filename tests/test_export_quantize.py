"""Export, the TensorRT Q/DQ rules, the sensitivity fallback and OpenVINO INT8, on a tiny real run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge.export import export_onnx, parity_check
from edge.quantize.calibration import accuracy, balanced_subset, model_inputs
from edge.quantize.qdq import check_qdq_graph, quantize_qdq, sensitivity_fallback
from edge.train.runs import load_run
from edge.train.vibration import run_splits


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    run = load_run(tiny_run)
    model = run.load_model()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", (1, 1024))
    splits = run_splits(run.config, {"train": 512, "val": None})
    (tx, ty), (vx, vy) = splits["train"], splits["val"]
    calib = model_inputs(tx[balanced_subset(ty, 64, np.random.default_rng(0))], "zscore")
    return {"run": run, "model": model, "path": path, "calib": calib, "val": (model_inputs(vx, "zscore"), vy)}


def ort_accuracy(path, val):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return accuracy(lambda x: session.run(None, {"window": x})[0], *val)


def test_export_has_opset_names_dynamic_batch_and_module_names(exported):
    model = onnx.load(str(exported["path"]))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in model.graph.input] == ["window"] and [o.name for o in model.graph.output] == ["logits"]
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value
    assert any(n.name.startswith("units.0.shrink.threshold") for n in model.graph.node)


def test_export_matches_pytorch_on_real_windows_on_both_runtimes(exported):
    report = parity_check(exported["model"], exported["path"], exported["val"][0][:32])
    assert report.passed and set(report.max_relative_error) == {"onnxruntime", "openvino"}
    assert all(v == 1.0 for v in report.argmax_agreement.values())


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_qdq_model_follows_every_tensorrt_rule_and_keeps_accuracy(exported, tmp_path, method):
    out = quantize_qdq(exported["path"], exported["calib"], tmp_path / "q.onnx", method)
    assert check_qdq_graph(out) == []
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(n.input[1].endswith("DequantizeLinear_Output") for n in convs)
    threshold = [n for n in model.graph.node if ".shrink" in n.name]
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert threshold and not any(i in dq_out for n in threshold for i in n.input)  # the threshold net is float
    fp32, int8 = ort_accuracy(exported["path"], exported["val"]), ort_accuracy(out, exported["val"])
    assert int8 >= fp32 - 0.02


def test_entropy_calibration_clips_ranges_that_minmax_keeps_whole(exported, tmp_path):
    # ONNX Runtime's default entropy settings search nothing and return minmax's ranges; ours must clip,
    # and the Q/DQ model must carry the clipped ranges as its activation scales.
    from edge.quantize.qdq import QUANTIZED_OPS, tensor_ranges

    full = tensor_ranges(exported["path"], exported["calib"], "minmax", op_types=QUANTIZED_OPS)
    clipped = tensor_ranges(exported["path"], exported["calib"], "entropy", op_types=QUANTIZED_OPS)
    assert set(clipped) == set(full)
    assert all(clipped[name] <= 1.01 * full[name] for name in full)
    assert sum(clipped[name] < 0.9 * full[name] for name in full) >= len(full) // 2

    def activation_scales(method):
        model = onnx.load(str(quantize_qdq(exported["path"], exported["calib"], tmp_path / f"{method}.onnx", method)))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"}

    entropy, minmax = activation_scales("entropy"), activation_scales("minmax")
    assert set(entropy) == set(minmax) and entropy != minmax
    for name, scale in entropy.items():
        assert scale == pytest.approx(clipped[name] / 127, rel=1e-3)
    # The build computes the ranges once and hands them on: the model must be the one computed afresh.
    reused = quantize_qdq(exported["path"], exported["calib"], tmp_path / "reused.onnx", "entropy", ranges=clipped)
    assert reused.read_bytes() == (tmp_path / "entropy.onnx").read_bytes()


def test_entropy_search_picks_the_clip_onnx_runtimes_reference_picks(exported, tmp_path):
    import contextlib
    import io

    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from edge.quantize.entropy import entropy_threshold
    from edge.quantize.qdq import ENTROPY_BINS, ENTROPY_LEVELS, CalibrationReader

    calibrator = create_calibrator(str(exported["path"]), op_types_to_calibrate=["Conv"],
                                   augmented_model_path=str(tmp_path / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"symmetric": True, "num_bins": ENTROPY_BINS,
                                                  "num_quantized_bins": ENTROPY_LEVELS})
    calibrator.collect_data(CalibrationReader(exported["calib"], "window"))
    histograms = calibrator.collector.histogram_dict
    for name in sorted(histograms)[:4]:
        hist, edges, lowest, highest, *_ = histograms[name]
        with contextlib.redirect_stdout(io.StringIO()):
            low, high = calibrator.collector.get_entropy_threshold(histograms[name], ENTROPY_LEVELS)
        assert entropy_threshold(hist, edges, lowest, highest, ENTROPY_LEVELS) == pytest.approx((low, high), rel=1e-6)


def test_rule_checker_catches_a_quantized_threshold_network(exported, tmp_path):
    out = quantize_qdq(exported["path"], exported["calib"], tmp_path / "q.onnx", keep_threshold_float=False)
    problems = check_qdq_graph(out, keep_threshold_float=True)
    assert any("threshold sub-network" in p for p in problems)
    assert check_qdq_graph(out, keep_threshold_float=False) == []


def test_sensitivity_fallback_returns_the_costliest_node_to_float_first(exported, tmp_path):
    # A validation function that, on top of the real accuracy, charges 5 pt while one chosen
    # convolution is quantized: the fallback must find that node first and stop there.
    victim = next(n.name for n in onnx.load(str(exported["path"])).graph.node if n.op_type == "Conv")

    def validate(path) -> float:
        model = onnx.load(str(path))
        node = next(n for n in model.graph.node if n.name == victim)
        quantized = any("DequantizeLinear" in i for i in node.input)
        return ort_accuracy(path, exported["val"]) - (0.05 if quantized else 0.0)

    result = sensitivity_fallback(exported["path"], exported["calib"], tmp_path / "fb.onnx", validate, max_drop=0.02)
    assert result.ranking[0][0] == victim and result.float_nodes[0] == victim
    assert result.within_budget and result.accuracy_fp32 - result.accuracy_int8 <= 0.02
    assert check_qdq_graph(result.path, float_nodes=tuple(result.float_nodes)) == []
    assert any("not all quantized" in p for p in check_qdq_graph(result.path))  # and says so without the list


def test_sensitivity_fallback_also_bounds_the_decisions_that_change(exported, tmp_path):
    # Validation accuracy that never moves cannot see the damage; the agreement function (real
    # decisions against FP32's, plus 5 % charged while one chosen convolution is quantized) can.
    import onnxruntime as ort

    victim = [n.name for n in onnx.load(str(exported["path"])).graph.node if n.op_type == "Conv"][1]
    x = exported["val"][0]

    def decide(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"window": x})[0].argmax(1)

    reference = decide(exported["path"])

    def agreement(path) -> float:
        node = next(n for n in onnx.load(str(path)).graph.node if n.name == victim)
        quantized = any("DequantizeLinear" in i for i in node.input)
        return float(np.mean(decide(path) == reference)) - (0.05 if quantized else 0.0)

    blind = sensitivity_fallback(exported["path"], exported["calib"], tmp_path / "blind.onnx", lambda p: 1.0,
                                 max_drop=0.02)
    assert blind.within_budget and blind.float_nodes == []
    result = sensitivity_fallback(exported["path"], exported["calib"], tmp_path / "fb.onnx", lambda p: 1.0,
                                  max_drop=0.02, agreement=agreement)
    assert result.float_nodes[0] == victim and result.ranking[0][0] == victim
    assert result.within_budget and result.agreement >= 0.98


def test_openvino_int8_keeps_accuracy_with_shrinkage_layers_in_float(exported, tmp_path):
    from edge.quantize.openvino_int8 import SHRINKAGE_FLOAT_PATTERNS, quantize_openvino

    result = quantize_openvino(exported["path"], exported["calib"], tmp_path / "m.xml", validation=exported["val"],
                               float_patterns=SHRINKAGE_FLOAT_PATTERNS)
    assert result.xml.is_file() and result.xml.with_suffix(".bin").is_file()
    assert result.validation_accuracy_int8 >= result.validation_accuracy_fp32 - 0.02


def test_legacy_calibration_cache_is_tensorrt_format_with_every_tensor(tiny_run, tmp_path):
    """LEGACY implicit calibration (TensorRT <= 10, DLA): header, hex float32 scales, ranges as calibrated."""
    from edge.bundle import open_bundle
    from edge.export.build import BuildError, BuildOptions, build_bundle
    from edge.quantize.trt_cache import hex_scale, read_calibration_cache, scale_hex

    assert scale_hex(1.0) == "3f800000" and hex_scale("3caa54fc") == pytest.approx(0.020792, rel=1e-4)
    out = tmp_path / "trt"
    # The cache's format is tested here, not the tiny model's INT8 accuracy: entropy ranges from 32 windows cost
    # it 1.87 pt on one CPU and under 1 pt on others, where the guard is 1 pt (tested in test_bundle_backends.py).
    build_bundle(tiny_run, out, BuildOptions(target="tensorrt", precision="int8", calib_size=32, guard_drop=0.05,
                                             calib_method="entropy", legacy_calib_cache="8601"), log=lambda *_: None)
    bundle = open_bundle(out)
    legacy = bundle.manifest["tensorrt"]["legacy_implicit_calibration"]
    header, ranges = read_calibration_cache(out / legacy["cache_file"])
    assert header == "TRT-8601-EntropyCalibration2" and "LEGACY" in legacy["note"]
    graph = onnx.load(str(out / legacy["onnx_file"])).graph
    names = {t for n in graph.node for t in n.output} | {i.name for i in graph.input}
    assert "window" in ranges and set(ranges) <= names and len(ranges) > 0.8 * len(names)
    assert all(r > 0 for r in ranges.values())
    assert 1.0 < ranges["window"] < 20.0     # z-scored windows: a few standard deviations
    with pytest.raises(BuildError, match="legacy-calib-cache"):
        BuildOptions(target="openvino", precision="int8", legacy_calib_cache="8601")


def test_openvino_float_layers_by_family():
    from edge.quantize.openvino_int8 import DCA_FLOAT_PATTERNS, SHRINKAGE_FLOAT_PATTERNS, float_patterns_for

    assert float_patterns_for({"name": "dca-cnn", "shrinkage": "none"}) == DCA_FLOAT_PATTERNS
    assert float_patterns_for({"name": "drsn2d", "shrinkage": "cw"}) == SHRINKAGE_FLOAT_PATTERNS
    assert float_patterns_for({"name": "resnet1d", "shrinkage": "none"}) == ()
    # an ensemble keeps in float what any of its members would (each pattern once)
    drsn2d, resnet18 = {"name": "drsn2d", "shrinkage": "cw"}, {"name": "resnet18", "shrinkage": "none"}
    assert float_patterns_for({"name": "ensemble", "members": [resnet18, drsn2d, drsn2d]}) == SHRINKAGE_FLOAT_PATTERNS
    assert float_patterns_for({"name": "ensemble", "members": [resnet18, resnet18]}) == ()
