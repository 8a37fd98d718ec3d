"""Inference over windows and accuracy under noise, for training-time validation and ``evaluate``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge.data.noise import add_noise
from edge.data.preprocess import model_input
from edge.train.device import device_of, to_device, to_numpy
from edge.train.metrics import classification_report


def snr_key(snr: float | None) -> str:
    """The JSON key of an SNR: ``"none"`` for clean, else the dB value (``"-4"``, ``"2.5"``)."""
    return "none" if snr is None else f"{snr:g}"


@torch.no_grad()
def logits(model: nn.Module, windows: np.ndarray, normalization: str = "zscore", batch_size: int = 512) -> np.ndarray:
    """The model's outputs (N, classes) for windows (N, L) or (N, C, L), preprocessed in batches."""
    model.eval()
    device, out = device_of(model), []
    for start in range(0, windows.shape[0], batch_size):
        x = model_input(windows[start:start + batch_size], normalization)
        out.append(to_numpy(model(to_device(x, device))))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def predict(model: nn.Module, windows: np.ndarray, normalization: str = "zscore",
            batch_size: int = 512) -> np.ndarray:
    """Predicted class index of each window (N, L) or (N, C, L)."""
    if windows.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return logits(model, windows, normalization, batch_size).argmax(axis=1)


def noise_rng(seed: int, snr: float) -> np.random.Generator:
    """The generator for one SNR: the same noise at that SNR whatever else is asked for, and for every model."""
    return np.random.default_rng([seed, int(round(snr * 1000)) + 1_000_000])


def noisy_copies(windows: np.ndarray, snrs: list, seed: int, kind: str = "gaussian"):
    """Yield (snr, windows at that SNR), the noise seeded by (seed, snr)."""
    for snr in snrs:
        yield snr, windows if snr is None else add_noise(windows, snr, noise_rng(seed, snr), kind)


def accuracy_under_noise(model: nn.Module, windows: np.ndarray, labels: np.ndarray, snrs: list,
                         normalization: str, seed: int, kind: str = "gaussian") -> dict[str, float]:
    return {snr_key(snr): float(np.mean(predict(model, x, normalization) == labels))
            for snr, x in noisy_copies(windows, snrs, seed, kind)}


def evaluate_under_noise(model: nn.Module, windows: np.ndarray, labels: np.ndarray, classes,
                         snrs: list, normalization: str, seed: int, kind: str = "gaussian") -> dict[str, dict]:
    """Full classification report at every SNR."""
    return {snr_key(snr): classification_report(labels, predict(model, x, normalization), classes)
            for snr, x in noisy_copies(windows, snrs, seed, kind)}
