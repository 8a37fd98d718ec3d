"""TensorRT on NVIDIA Jetson and GPU hosts: page-locked buffers, one CUDA stream, async copies.

The engine is built on the target from the bundle's ONNX (engines are not portable;
see ``edge.compile.tensorrt``) and cached next to the bundle.  TensorRT >= 10 runs
with named tensors and ``execute_async_v3``; TensorRT 8.6 (JetPack 5) with bindings
and ``execute_async_v2``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.backends.base import Backend, BackendError, EngineMissing, require


def trt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


class TensorRtBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle, threads=None, device=None, engine_path: str | Path | None = None):
        super().__init__(bundle, threads, device or "GPU")
        trt = require("tensorrt", "tensorrt", "the TensorRT backend (on Jetson: apt install python3-libnvinfer)")
        cuda = require("pycuda.driver", "jetson", "the TensorRT backend's CUDA buffers")
        try:
            cuda.init()
            if cuda.Device.count() == 0:
                raise BackendError("TensorRT backend: no CUDA device found")
            self._context_cuda = cuda.Device(0).make_context()
        except cuda.Error as exc:
            raise BackendError(f"TensorRT backend: CUDA is not usable here ({exc})") from exc
        self._trt, self._cuda = trt, cuda
        from edge.compile.tensorrt import engine_path_for, trtexec_command

        engine_path = Path(engine_path or engine_path_for(bundle.path, bundle.manifest))
        if not engine_path.is_file():
            self._context_cuda.pop()
            raise EngineMissing(f"no TensorRT engine at {engine_path}; build it on this device with "
                               f"`drsn-edge compile-trt --bundle {bundle.path}` or: "
                               f"{trtexec_command(bundle.manifest, engine_path)}")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise BackendError(f"{engine_path} was built by another TensorRT version or for another GPU: rebuild it")
        self._context = self._engine.create_execution_context()
        self._stream = cuda.Stream()
        self._buffers: dict[int, tuple] = {}

    def _io(self, batch: int):
        """Page-locked host and device buffers for one batch size, allocated once."""
        if batch in self._buffers:
            return self._buffers[batch]
        trt, cuda = self._trt, self._cuda
        shape_in = (batch, *self.input_shape)
        if trt_major(trt) >= 10:
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inp = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
            out = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
            self._context.set_input_shape(inp, shape_in)
            shape_out = tuple(self._context.get_tensor_shape(out))
        else:
            inp, out = 0, 1
            self._context.set_binding_shape(inp, shape_in)
            shape_out = tuple(self._context.get_binding_shape(out))
        host_in = cuda.pagelocked_empty(shape_in, np.float32)
        host_out = cuda.pagelocked_empty(shape_out, np.float32)
        dev_in, dev_out = cuda.mem_alloc(host_in.nbytes), cuda.mem_alloc(host_out.nbytes)
        self._buffers[batch] = (inp, out, host_in, host_out, dev_in, dev_out)
        return self._buffers[batch]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        inp, out, host_in, host_out, dev_in, dev_out = self._io(batch.shape[0])
        np.copyto(host_in, batch)
        self._cuda.memcpy_htod_async(dev_in, host_in, self._stream)
        if trt_major(self._trt) >= 10:
            self._context.set_tensor_address(inp, int(dev_in))
            self._context.set_tensor_address(out, int(dev_out))
            self._context.execute_async_v3(self._stream.handle)
        else:
            self._context.execute_async_v2([int(dev_in), int(dev_out)], self._stream.handle)
        self._cuda.memcpy_dtoh_async(host_out, dev_out, self._stream)
        self._stream.synchronize()
        return host_out.copy()

    def version(self) -> str:
        return self._trt.__version__

    def __del__(self):
        ctx = getattr(self, "_context_cuda", None)
        if ctx is not None:
            ctx.pop()
