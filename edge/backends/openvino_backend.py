"""OpenVINO on Intel CPUs, iGPUs and NPUs, with a latency hint and a model cache."""

from __future__ import annotations

import numpy as np

from edge.backends.base import Backend, require

MAX_STATIC_SHAPES = 4   # batch sizes compiled with a fixed shape


def openvino_config(device: str, threads: int | None, cache_dir: str | None, precision_hint: str | None) -> dict:
    """Compile settings recorded in the manifest and used on the gateway alike."""
    config: dict = {"PERFORMANCE_HINT": "LATENCY"}
    if threads and device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    if cache_dir:
        config["CACHE_DIR"] = cache_dir
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    return config


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, bundle, threads=None, device=None, cache_dir: str | None = None):
        super().__init__(bundle, threads, device or bundle.manifest.get("backend", {}).get("device", "CPU"))
        self._ov = require("openvino", "nuc", "the OpenVINO backend")
        hint = bundle.manifest.get("backend", {}).get("inference_precision_hint")
        core = self._ov.Core()
        if self.device not in core.available_devices and self.device != "AUTO":
            from edge.backends.base import BackendError

            raise BackendError(f"OpenVINO device {self.device} not present here (available: "
                               f"{', '.join(core.available_devices)})")
        self._core = core
        self._config = openvino_config(self.device, threads, cache_dir, hint)
        # The runtime infers one shape all day (one window, or the patches of one tile): a model
        # compiled for exactly that shape skips the dynamic-shape work of every call (about 40 % of a
        # small model's batch-1 time on CPU).  A few static shapes are kept; beyond them the
        # dynamic-batch model serves.  Each static request reads its input from a buffer of its own,
        # bound once: a call then copies the batch in and runs, skipping the Python input dispatch
        # (about 40 us, a fifth of a small model's batch-1 time).
        self._static: dict[int, tuple[object, np.ndarray]] = {}
        self._dynamic = None
        self._request(1)   # compile now: a model that does not load must fail here, not on the first window

    def _request(self, batch: int) -> tuple[object, np.ndarray | None]:
        """The request for ``batch`` inputs and its bound input buffer (None for the dynamic model)."""
        static = self._static.get(batch)
        if static is not None:
            return static
        if len(self._static) < MAX_STATIC_SHAPES:
            model = self._core.read_model(str(self.bundle.file("model")))
            model.reshape([batch, *self.input_shape])
            request = self._core.compile_model(model, self.device, self._config).create_infer_request()
            buffer = np.zeros((batch, *self.input_shape), np.float32)
            request.set_input_tensor(self._ov.Tensor(buffer, shared_memory=True))
            static = self._static[batch] = (request, buffer)
            return static
        if self._dynamic is None:
            model = self._core.read_model(str(self.bundle.file("model")))
            self._dynamic = self._core.compile_model(model, self.device, self._config).create_infer_request()
        return self._dynamic, None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        request, buffer = self._request(batch.shape[0])
        if buffer is not None:
            np.copyto(buffer, batch)
            request.infer()
        else:
            request.infer({0: batch}, share_inputs=True)
        return request.get_output_tensor(0).data.copy()

    def version(self) -> str:
        return self._ov.get_version()
