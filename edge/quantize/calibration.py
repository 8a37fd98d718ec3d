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


def decisions(predict: Predictor, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The class index the model picks for every input, in batches."""
    return np.concatenate([predict(x[i:i + batch]).argmax(axis=1) for i in range(0, x.shape[0], batch)])


def accuracy(predict: Predictor, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    return float(np.mean(decisions(predict, x, batch) == y))


def agreement(predict: Predictor, x: np.ndarray, reference: np.ndarray) -> float:
    """Share of ``x`` that ``predict`` decides as ``reference`` (FP32's decisions on ``x``) does."""
    return float(np.mean(decisions(predict, x) == reference))


def agreement_inputs(train_x: np.ndarray, calibration_picks: np.ndarray, val_x: np.ndarray, size: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Inputs to compare INT8 decisions with FP32's: the validation split and training inputs not calibrated on.

    No labels are needed, so the set can be several times the validation split; the
    test split is never in it.  At most ``size`` inputs, validation first.
    """
    unused = np.setdiff1d(np.arange(train_x.shape[0]), calibration_picks)
    room = max(size - val_x.shape[0], 0)
    extra = np.sort(rng.choice(unused, size=min(room, unused.size), replace=False))
    return np.concatenate([val_x[:size], train_x[extra]])
