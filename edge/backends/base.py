"""One small interface for every inference backend (gateway side: never imports torch).

A backend loads the model file a verified bundle names, warms up, infers a batch of
preprocessed windows and says what it runs on.  Each backend imports its framework
only when it is created, so a gateway needs only the one it uses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from edge.bundle import Bundle
from edge.errors import DrsnEdgeError


class BackendError(DrsnEdgeError):
    """A backend that cannot run here (missing package, no device), with what to install or do."""


class EngineMissing(BackendError):
    """A TensorRT bundle whose engine has not been built on this device yet (``drsn-edge compile-trt``)."""


def require(module: str, extra: str, purpose: str):
    """Import ``module`` or fail with the ``pip install`` line that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(f"{purpose} needs the '{module}' package: pip install 'drsn-edge[{extra}]' "
                           f"({exc})") from exc


class Backend(ABC):
    """Load, warm up, infer; ``describe`` says backend, version, device and precision."""

    name: str = ""

    def __init__(self, bundle: Bundle, threads: int | None = None, device: str | None = None):
        self.bundle = bundle
        self.threads = threads
        self.device = device
        spec = bundle.manifest["input"]
        self.input_shape = tuple(spec["shape"][1:])
        self.precision = bundle.manifest["precision"]

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for a float32 batch (N, *input_shape)."""

    @abstractmethod
    def version(self) -> str:
        ...

    def warm_up(self, runs: int = 20, batch: int = 1) -> None:
        """First inferences are slow on every backend (allocation, kernel choice): pay that before data,
        at the batch size the data will come in."""
        x = np.zeros((batch, *self.input_shape), dtype=np.float32)
        for _ in range(runs):
            self.infer(x)

    def describe(self) -> dict:
        return {"backend": self.name, "version": self.version(), "device": self.device or "CPU",
                "precision": self.precision, "threads": self.threads}
