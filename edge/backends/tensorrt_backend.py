"""TensorRT on NVIDIA Jetson and GPU hosts: page-locked buffers, one CUDA stream, async copies.

The engine is built on the target from the bundle's ONNX (engines are not portable;
see ``edge.compile.tensorrt``) and cached next to the bundle.  TensorRT >= 10 runs
with named tensors and ``execute_async_v3``; TensorRT 8.6 (JetPack 5) with bindings
and ``execute_async_v2``.  CUDA comes from :mod:`edge.backends.cuda_buffers`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.backends.base import Backend, BackendError, EngineMissing, require
from edge.backends.cuda_buffers import CudaStream, HostDeviceBuffer, open_device


def trt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


class TensorRtBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle, threads=None, device=None, engine_path: str | Path | None = None):
        super().__init__(bundle, threads, device or "GPU")
        trt = require("tensorrt", "tensorrt", "the TensorRT backend (on Jetson: apt install python3-libnvinfer)")
        from edge.compile.tensorrt import engine_path_for, trtexec_command

        engine_path = Path(engine_path or engine_path_for(bundle.path, bundle.manifest))
        if not engine_path.is_file():
            raise EngineMissing(f"no TensorRT engine at {engine_path}; build it on this device with "
                               f"`drsn-edge compile-trt --bundle {bundle.path}` or: "
                               f"{trtexec_command(bundle.manifest, engine_path)}")
        self.gpu = open_device(0)
        self.device = self.gpu.name
        self._trt = trt
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))   # outlives the engine it deserializes
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise BackendError(f"{engine_path} was built by another TensorRT version or for another GPU: rebuild it")
        self._context = self._engine.create_execution_context()
        self._stream = CudaStream()
        self._buffers: dict[int, tuple[HostDeviceBuffer, HostDeviceBuffer]] = {}
        self._batch_set: int | None = None   # the batch size the execution context's input shape holds
        if trt_major(trt) >= 10:
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            self._input = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
            self._output = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        else:
            self._input, self._output = 0, 1

    def _set_batch(self, batch: int) -> tuple[int, ...]:
        """Give the execution context this batch's input shape; the output shape it then has.

        Set at every change of batch size, not only at the first use of one: a context keeps the
        last shape it was given, and the runtime alternates between a tile's batch and warm-ups.
        """
        shape_in = (batch, *self.input_shape)
        if trt_major(self._trt) >= 10:
            accepted = self._context.set_input_shape(self._input, shape_in)
            shape_out = tuple(self._context.get_tensor_shape(self._output))
        else:
            accepted = self._context.set_binding_shape(self._input, shape_in)
            shape_out = tuple(self._context.get_binding_shape(self._output))
        if not accepted:
            raise BackendError(f"the TensorRT engine does not take a batch of {batch} (a wider detector line than "
                               f"its profile): build it again with `drsn-edge compile-trt --bundle "
                               f"{self.bundle.path} --max-batch {batch}`")
        self._batch_set = batch
        return shape_out

    def _io(self, batch: int) -> tuple[HostDeviceBuffer, HostDeviceBuffer]:
        """The input and output buffers for one batch size, allocated at its first use."""
        if batch not in self._buffers:
            shape_out = self._set_batch(batch)
            self._buffers[batch] = (HostDeviceBuffer((batch, *self.input_shape)), HostDeviceBuffer(shape_out))
        elif self._batch_set != batch:
            self._set_batch(batch)
        return self._buffers[batch]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        into, out = self._io(batch.shape[0])
        np.copyto(into.host, batch)
        into.upload(self._stream)
        if trt_major(self._trt) >= 10:
            self._context.set_tensor_address(self._input, into.device)
            self._context.set_tensor_address(self._output, out.device)
            queued = self._context.execute_async_v3(int(self._stream))
        else:
            queued = self._context.execute_async_v2([into.device, out.device], int(self._stream))
        if not queued:   # the output buffer would hold the last batch's scores
            raise BackendError("TensorRT could not run the engine on this batch; see TensorRT's messages above")
        out.download(self._stream)
        self._stream.synchronize()
        return out.host.copy()

    def version(self) -> str:
        return self._trt.__version__

    def describe(self) -> dict:
        return super().describe() | {"gpu": self.gpu.to_dict()}

    def close(self) -> None:
        """Free the CUDA buffers and the stream (the engine and context go with the object)."""
        for pair in self._buffers.values():
            for buffer in pair:
                buffer.close()
        self._buffers.clear()
        self._stream.close()
