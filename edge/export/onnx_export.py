"""ONNX is the interchange format: opset >= 17, named input and output, dynamic batch.

Every export is checked against PyTorch on real windows, on ONNX Runtime and on
OpenVINO compiled with ``INFERENCE_PRECISION_HINT=f32`` (a CPU with bf16 support
would otherwise run bf16 and differ by far more than the tolerance).
"""

from __future__ import annotations

import inspect
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.errors import DrsnEdgeError

INPUT_NAME = "window"
OUTPUT_NAME = "logits"
OPSET = 18


class ExportError(DrsnEdgeError):
    """The exported model does not match PyTorch, or could not be exported."""


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...], opset: int = OPSET) -> Path:
    """Export ``model`` (eval mode) with a dynamic batch axis; ``input_shape`` excludes the batch."""
    import onnx

    if opset < 17:
        raise ExportError(f"opset {opset} is below 17, the minimum drsn-edge supports")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    # Batch 2: an example of 1 lets the exporter fix the batch axis where a layer reshapes by it (InstanceNorm).
    example = (torch.zeros((2, *input_shape), dtype=torch.float32),)
    arg = next(iter(inspect.signature(model.forward).parameters))
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" and the like
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, example, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes={arg: {0: torch.export.Dim("batch")}}, opset_version=opset,
                                    verbose=False, external_data=False)
    program.save(str(path))
    model = onnx.load(str(path))
    name_nodes_by_module(model)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path


def name_nodes_by_module(model) -> None:
    """Name every node after the module it comes from (``units.2.shrink.threshold/mean_2``).

    The exporter's names (``node_mean_2``) say nothing; these survive into OpenVINO IR
    and TensorRT layer names, so quantizers can be told which module to leave in float
    and profiles read like the model.
    """
    seen: set[str] = set()
    for node in model.graph.node:
        namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        parts = namespace.split("/")
        if len(parts) < 2:
            continue
        module = parts[-2].split(":")[0].strip()
        op = parts[-1].split(":")[0].strip()
        name = f"{module}/{op}" if module else op
        while name in seen:
            name += "_"
        seen.add(name)
        node.name = name


@dataclass
class ParityReport:
    """Largest difference from PyTorch per backend, relative to the largest PyTorch output."""

    samples: int
    tolerance: float
    max_relative_error: dict[str, float] = field(default_factory=dict)
    argmax_agreement: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(err <= self.tolerance for err in self.max_relative_error.values())

    def to_dict(self) -> dict:
        return {"samples": self.samples, "tolerance": self.tolerance, "passed": self.passed,
                "max_relative_error": self.max_relative_error, "argmax_agreement": self.argmax_agreement}


def onnxruntime_predictor(path: Path):
    """A batch -> logits function over an ONNX model on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def _run_onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    return onnxruntime_predictor(path)(x)


def _run_openvino(path: Path, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(x)[compiled.output(0)]


RUNNERS = {"onnxruntime": _run_onnxruntime, "openvino": _run_openvino}


def parity_check(model: nn.Module, path: str | Path, windows: np.ndarray, backends: tuple[str, ...] = ("onnxruntime",
                 "openvino"), tolerance: float = 1e-4) -> ParityReport:
    """Run real (preprocessed) windows through PyTorch and each backend; compare the logits."""
    x = np.ascontiguousarray(windows, dtype=np.float32)
    with torch.no_grad():
        reference = model.eval()(torch.from_numpy(x)).numpy()
    scale = max(float(np.abs(reference).max()), 1e-12)
    report = ParityReport(samples=int(x.shape[0]), tolerance=tolerance)
    for name in backends:
        try:
            got = RUNNERS[name](Path(path), x)
        except ImportError as exc:
            raise ExportError(f"parity check on {name} needs it installed: pip install 'drsn-edge[{'onnx' if name == 'onnxruntime' else 'openvino'}]' ({exc})") from exc
        report.max_relative_error[name] = float(np.abs(got - reference).max() / scale)
        report.argmax_agreement[name] = float(np.mean(got.argmax(1) == reference.argmax(1)))
    return report
