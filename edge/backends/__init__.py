"""Inference backends behind one interface: OpenVINO, ONNX Runtime, TensorRT (gateway side: no torch)."""

from __future__ import annotations

from edge.backends.base import Backend, BackendError, EngineMissing
from edge.bundle import Bundle

BACKENDS = ("openvino", "onnxruntime", "tensorrt")


def load_backend(bundle: Bundle, threads: int | None = None, device: str | None = None, **options) -> Backend:
    """The backend the bundle was built for, ready to warm up."""
    name = bundle.manifest["backend"]["name"]
    if name == "onnxruntime":
        from edge.backends.onnxruntime_backend import OnnxRuntimeBackend as cls
    elif name == "openvino":
        from edge.backends.openvino_backend import OpenVinoBackend as cls
    elif name == "tensorrt":
        from edge.backends.tensorrt_backend import TensorRtBackend as cls
    else:
        raise BackendError(f"bundle {bundle.path} names backend {name!r}; this drsn-edge knows {', '.join(BACKENDS)}")
    return cls(bundle, threads=threads, device=device, **options)


__all__ = ["BACKENDS", "Backend", "BackendError", "EngineMissing", "load_backend"]
