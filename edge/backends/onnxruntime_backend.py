"""ONNX Runtime on the CPU: runs everywhere, and checks every Q/DQ model before TensorRT sees it."""

from __future__ import annotations

import numpy as np

from edge.backends.base import Backend, require


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle, threads=None, device=None):
        super().__init__(bundle, threads, device)
        self._ort = require("onnxruntime", "onnx", "the ONNX Runtime backend")
        options = self._ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = self._ort.InferenceSession(str(bundle.file("model")), options,
                                                   providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self._output], {self._input: batch})[0]

    def version(self) -> str:
        return self._ort.__version__
