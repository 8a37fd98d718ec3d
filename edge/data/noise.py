"""Additive noise at a target signal-to-noise ratio, per window.

Used for noise-augmented training and for robustness evaluation.  SNR is
``10 log10(P_signal / P_noise)`` with powers measured on each window itself.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from edge.errors import DataError

NOISE_KINDS: tuple[str, ...] = ("gaussian", "pink", "laplacian")
#: ``file:PATH`` as a noise kind: segments of a recorded background noise (.npy, .wav or .mat).
RECORDED_PREFIX = "file:"


@functools.lru_cache(maxsize=4)
def load_noise_recording(path: str) -> np.ndarray:
    """A recorded background noise as one float64 array: .npy (any shape, flattened), .wav (first
    channel) or .mat (the first ``*_time`` variable, else the first numeric array)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"noise recording {p} does not exist")
    try:
        if p.suffix == ".npy":
            data = np.load(p, allow_pickle=False)
        elif p.suffix == ".wav":
            from scipy.io import wavfile

            data = wavfile.read(p)[1]
            data = data[:, 0] if data.ndim > 1 else data
        elif p.suffix == ".mat":
            from scipy.io import loadmat

            variables = {k: v for k, v in loadmat(p).items() if not k.startswith("__") and isinstance(v, np.ndarray)
                         and v.dtype.kind in "fiu"}
            name = next((k for k in variables if k.endswith("_time")), next(iter(variables), None))
            if name is None:
                raise DataError(f"noise recording {p} holds no numeric array")
            data = variables[name]
        else:
            raise DataError(f"noise recording {p}: expected .npy, .wav or .mat")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"noise recording {p} cannot be read: {exc}") from exc
    data = np.asarray(data, dtype=np.float64).ravel()
    if not np.all(np.isfinite(data)):
        raise DataError(f"noise recording {p} holds NaN or infinite samples")
    if data.size < 2 or np.std(data) == 0:
        raise DataError(f"noise recording {p} is empty or constant")
    return data


def recorded_segments(recording: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Segments of ``recording`` at random offsets, one per window (shorter recordings are tiled)."""
    n = shape[-1]
    if recording.size < n:
        recording = np.tile(recording, n // recording.size + 1)
    count = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    starts = rng.integers(0, recording.size - n + 1, size=count)
    return recording[starts[:, None] + np.arange(n)].reshape(shape)


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
    elif kind.startswith(RECORDED_PREFIX):
        noise = recorded_segments(load_noise_recording(kind[len(RECORDED_PREFIX):]), shape, rng)
    else:
        raise DataError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)} "
                        f"or {RECORDED_PREFIX}PATH (a recording)")
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
