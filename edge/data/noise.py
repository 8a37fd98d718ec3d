"""Additive noise at a target signal-to-noise ratio, per window.

Used for noise-augmented training and for robustness evaluation.  SNR is
``10 log10(P_signal / P_noise)`` with powers measured on each window itself.
"""

from __future__ import annotations

import numpy as np

from edge.errors import DataError

NOISE_KINDS: tuple[str, ...] = ("gaussian", "pink", "laplacian")


def unit_noise(shape: tuple[int, ...], rng: np.random.Generator, kind: str = "gaussian") -> np.ndarray:
    """Zero-mean noise of unit power along the last axis."""
    if kind == "gaussian":
        noise = rng.standard_normal(shape)
    elif kind == "laplacian":
        noise = rng.laplace(scale=1 / np.sqrt(2), size=shape)
    elif kind == "pink":
        n = shape[-1]
        spectrum = rng.standard_normal(shape[:-1] + (n // 2 + 1,)) + 1j * rng.standard_normal(shape[:-1] + (n // 2 + 1,))
        f = np.arange(n // 2 + 1, dtype=np.float64)
        f[0] = 1.0
        spectrum /= np.sqrt(f)
        spectrum[..., 0] = 0
        noise = np.fft.irfft(spectrum, n=n)
    else:
        raise DataError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    noise = noise - noise.mean(axis=-1, keepdims=True)
    return noise / np.sqrt(np.mean(noise ** 2, axis=-1, keepdims=True) + 1e-30)


def add_noise(x: np.ndarray, snr_db: float | np.ndarray, rng: np.random.Generator,
              kind: str = "gaussian") -> np.ndarray:
    """Return ``x`` plus noise at ``snr_db`` (scalar or one value per window) along the last axis."""
    x = np.asarray(x)
    snr = np.asarray(snr_db, dtype=np.float64)
    if not np.all(np.isfinite(snr)):
        raise DataError(f"SNR must be finite, got {snr_db}")
    if snr.ndim:
        snr = snr.reshape(snr.shape + (1,) * (x.ndim - snr.ndim))
    power = np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True)
    scale = np.sqrt(power / 10.0 ** (snr / 10.0))
    return (x + scale * unit_noise(x.shape, rng, kind)).astype(x.dtype, copy=False)


def parse_snr_list(text: str) -> list[float | None]:
    """Parse ``"-4,0,4,8,none"`` into [-4.0, 0.0, 4.0, 8.0, None] (None means clean)."""
    out: list[float | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part in ("none", "clean", "inf"):
            out.append(None)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise DataError(f"SNR list expects dB values or 'none', got {part!r} in {text!r}") from None
    if not out:
        raise DataError(f"empty SNR list {text!r}")
    return out


def parse_snr_range(text: str) -> tuple[float, float] | None:
    """Parse ``"-6:10"`` (uniform range in dB) or ``"none"`` (no noise augmentation)."""
    text = text.strip().lower()
    if text in ("none", "off", ""):
        return None
    try:
        lo, hi = (float(v) for v in text.split(":")) if ":" in text else (float(text),) * 2
    except ValueError:
        raise DataError(f"--snr-train expects LO:HI in dB (e.g. -6:10), one value, or 'none'; got {text!r}") from None
    if lo > hi:
        raise DataError(f"--snr-train range {text!r} has LO above HI")
    return lo, hi
