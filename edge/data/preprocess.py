"""Window preprocessing shared by training, evaluation and (through the bundle manifest) the gateway.

Only numpy: the gateway runtime reproduces exactly this from the manifest.
"""

from __future__ import annotations

import numpy as np

#: Names of the normalisations a run can record.
NORMALIZATIONS: tuple[str, ...] = ("zscore", "none")


def normalize(windows: np.ndarray, method: str = "zscore", eps: float = 1e-6) -> np.ndarray:
    """Per-window normalisation along the last axis (``zscore``: zero mean, unit std)."""
    x = np.asarray(windows, dtype=np.float32)
    if method == "none":
        return x
    if method != "zscore":
        raise ValueError(f"unknown normalisation {method!r}; choose one of {', '.join(NORMALIZATIONS)}")
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return (x - mean) / (std + eps)
