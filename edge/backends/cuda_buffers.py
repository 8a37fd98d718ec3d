"""CUDA for the TensorRT backend: the GPU, one stream, and page-locked host buffers paired with device buffers.

Through NVIDIA's ``cuda-bindings`` (the CUDA runtime API called from Python): binary wheels for x86
and aarch64, so nothing is compiled on the gateway.  The runtime API works in the device's primary
context, which is current on every thread: the runtime's decider thread infers with buffers that
its main thread allocated.  Never imports torch.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge.backends.base import BackendError, require


class CudaError(BackendError):
    """No usable NVIDIA driver or GPU, or a CUDA call that failed; says which and why."""


@functools.cache   # looked up once: every copy and wait of an inference calls through it
def cuda_runtime():
    """The ``cuda.bindings.runtime`` module, or a :class:`BackendError` with the install line."""
    return require("cuda.bindings.runtime", "jetson", "the TensorRT backend's CUDA buffers")


def cuda_call(name: str, *args: Any) -> Any:
    """Call the runtime API function ``name``; its result, or a :class:`CudaError` naming the call and the cause."""
    rt = cuda_runtime()
    err, *values = getattr(rt, name)(*args)
    if err != rt.cudaError_t.cudaSuccess:
        reason = rt.cudaGetErrorString(err)[1]
        raise CudaError(f"CUDA {name} failed: {err.name} ({reason.decode() if reason else 'no description'})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _cuda_version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


@dataclass(frozen=True)
class CudaDevice:
    """What the backend runs on, for ``describe`` and benchmark results."""

    index: int
    name: str
    compute_capability: str
    memory_mib: int
    driver_cuda: str     # the newest CUDA the installed driver supports
    runtime_cuda: str    # the CUDA of the cuda-bindings wheel

    def to_dict(self) -> dict:
        return asdict(self)


def open_device(index: int = 0) -> CudaDevice:
    """Make GPU ``index`` current, or say plainly why there is none to use."""
    rt = cuda_runtime()
    driver = rt.cudaDriverGetVersion()[1] or 0
    if driver == 0:
        raise CudaError("no NVIDIA driver here: the TensorRT backend runs on a Jetson or on a host with an "
                        "NVIDIA GPU; on this host use an OpenVINO or ONNX Runtime bundle")
    runtime = cuda_call("cudaRuntimeGetVersion")
    if driver // 1000 < runtime // 1000:
        raise CudaError(f"the NVIDIA driver here supports CUDA {_cuda_version(driver)}, but the installed "
                        f"cuda-bindings is for CUDA {_cuda_version(runtime)}: pip install "
                        f"'cuda-bindings=={driver // 1000}.*' (its major version must match the driver's CUDA)")
    count = cuda_call("cudaGetDeviceCount")
    if not 0 <= index < count:
        raise CudaError(f"GPU {index} asked for; this host has {count}")
    cuda_call("cudaSetDevice", index)
    props = cuda_call("cudaGetDeviceProperties", index)
    name = props.name.decode(errors="replace").rstrip("\0") if isinstance(props.name, bytes) else str(props.name)
    return CudaDevice(index, name, f"{props.major}.{props.minor}", int(props.totalGlobalMem) >> 20,
                      _cuda_version(driver), _cuda_version(runtime))


class CudaStream:
    """One CUDA stream: copies and inference queue on it in order, :meth:`synchronize` waits for them."""

    def __init__(self) -> None:
        self.handle = cuda_call("cudaStreamCreate")

    def synchronize(self) -> None:
        cuda_call("cudaStreamSynchronize", self.handle)

    def __int__(self) -> int:
        return int(self.handle)

    def close(self) -> None:
        if self.handle is not None:
            cuda_call("cudaStreamDestroy", self.handle)
            self.handle = None


class HostDeviceBuffer:
    """A page-locked host array and a device allocation of the same size: copies between them run
    asynchronously on a stream (pageable memory would make the driver stage each copy)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> None:
        dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self._host_ptr = cuda_call("cudaMallocHost", self.nbytes)
        try:
            self.device = cuda_call("cudaMalloc", self.nbytes)
        except CudaError:
            cuda_call("cudaFreeHost", self._host_ptr)
            raise
        raw = (ctypes.c_byte * self.nbytes).from_address(self._host_ptr)
        self.host = np.frombuffer(raw, dtype=dtype).reshape(shape)   # valid until close()

    def upload(self, stream: CudaStream) -> None:
        """Queue the host array's copy to the device on ``stream``."""
        kind = cuda_runtime().cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_call("cudaMemcpyAsync", self.device, self._host_ptr, self.nbytes, kind, stream.handle)

    def download(self, stream: CudaStream) -> None:
        """Queue the device allocation's copy to the host array on ``stream``."""
        kind = cuda_runtime().cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call("cudaMemcpyAsync", self._host_ptr, self.device, self.nbytes, kind, stream.handle)

    def close(self) -> None:
        if self._host_ptr:
            self.host = None
            cuda_call("cudaFree", self.device)
            cuda_call("cudaFreeHost", self._host_ptr)
            self._host_ptr = self.device = 0
