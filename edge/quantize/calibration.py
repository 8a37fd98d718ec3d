"""Calibration and validation sets drawn from a run's own splits, and the accuracy they are judged by."""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np

from edge.data.preprocess import model_input

#: A validation function: model inputs (N, C, L) and labels -> accuracy in [0, 1].
Predictor = Callable[[np.ndarray], np.ndarray]


def balanced_subset(labels: np.ndarray, size: int, rng: np.random.Generator, balanced: bool = True) -> np.ndarray:
    """Indices of ``size`` samples, the same number per class when ``balanced`` (as far as each class has)."""
    if size >= labels.shape[0]:
        return np.arange(labels.shape[0])
    if not balanced:
        return np.sort(rng.choice(labels.shape[0], size=size, replace=False))
    classes = np.unique(labels)
    per_class = max(1, size // classes.size)
    picks = [rng.choice(np.flatnonzero(labels == c), size=min(per_class, int(np.sum(labels == c))), replace=False)
             for c in classes]
    return np.sort(np.concatenate(picks))


def model_inputs(windows: np.ndarray, normalization: str) -> np.ndarray:
    """Raw windows (N, L) or images (N, 1, H, W) to the network's input, preprocessed as the manifest says."""
    return model_input(windows, normalization)


def dataset_hash(x: np.ndarray) -> str:
    """sha256 of a calibration set's bytes, recorded in the manifest."""
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def accuracy(predict: Predictor, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    logits = np.concatenate([predict(x[i:i + batch]) for i in range(0, x.shape[0], batch)])
    return float(np.mean(logits.argmax(axis=1) == y))
