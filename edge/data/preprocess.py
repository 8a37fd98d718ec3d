"""Window preprocessing shared by training, evaluation and (through the bundle manifest) the gateway.

Only numpy: the gateway runtime reproduces exactly this from the manifest.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Names of the normalisations a run can record.  ``zscore`` works on the last axis (a
#: vibration window), ``zscore-image`` on the last two (an image or tile): zero mean, unit
#: std per window or per image, so a sensor's gain drift does not move the input.
#: ``center-image`` only removes an image's mean: its contrast, the depth of a flaw in
#: grey levels, stays in the input.  ``spectrum`` turns a vibration window of L samples
#: into its amplitude spectrum (L/2 bins, see ``amplitude_spectrum``); ``envelope`` into its
#: envelope in physical units (L samples, see ``envelope``); ``raw+envelope`` gives two input
#: channels, the window as it is (as ``none``) and its envelope.
NORMALIZATIONS: tuple[str, ...] = ("zscore", "zscore-image", "center-image", "spectrum", "envelope", "raw+envelope",
                                   "none")
#: The normalisations a vibration window can take.
VIBRATION_NORMALIZATIONS: tuple[str, ...] = ("zscore", "spectrum", "envelope", "raw+envelope", "none")

#: Normalisations that turn each window into more than one input channel: windows (N, L)
#: become (N, C, L), and the network reads C channels.
INPUT_CHANNELS: dict[str, int] = {"raw+envelope": 2}


def input_channels(normalization: str) -> int:
    """How many input channels the network reads for one window under ``normalization``."""
    return INPUT_CHANNELS.get(normalization, 1)


def normalize(windows: np.ndarray, method: str = "zscore", eps: float = 1e-6) -> np.ndarray:
    """Per-window (``zscore``) or per-image (``zscore-image``, ``center-image``) normalisation;
    ``none`` passes through."""
    x = np.asarray(windows, dtype=np.float32)
    if method == "none":
        return x
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {method!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if method == "spectrum":
        return normalize(amplitude_spectrum(x), "zscore", eps)
    if method == "envelope":
        return envelope(x)
    if method == "raw+envelope":
        # The waveform keeps what survives heavy noise (the network learns its own filters);
        # the envelope keeps the impacts' timing, which a change of load disturbs least.
        return np.stack([x, envelope(x)], axis=-2)
    axes = (-1,) if method == "zscore" else (-2, -1)
    # numpy's std, spelled out so the centred copy is made once and divided in place: the same
    # numbers, about a third less time per window on the gateway.
    centred = x - x.mean(axis=axes, keepdims=True)
    if method == "center-image":
        return centred
    std = np.sqrt(np.mean(np.square(centred), axis=axes, keepdims=True))
    centred /= std + eps
    return centred


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n).astype(np.float32)


def _centred_windows(windows: np.ndarray, what: str) -> np.ndarray:
    """Float32 windows (last axis) with their mean removed; ``what`` needs at least 2 samples a window."""
    x = np.asarray(windows, dtype=np.float32)
    if x.shape[-1] < 2:
        raise ValueError(f"{what} needs windows of at least 2 samples, got {x.shape[-1]}")
    return x - x.mean(axis=-1, keepdims=True)


def amplitude_spectrum(windows: np.ndarray) -> np.ndarray:
    """Amplitude of the Hann-tapered spectrum of each window (last axis): L samples -> L/2 bins.

    Bins 1 .. L/2 (the mean, bin 0, is dropped).  A bearing fault shows as energy in
    resonance bands and at its fault frequencies; a change of motor load moves the
    phase of every component and shifts the frequencies by a few per cent, which a
    waveform model must learn to ignore and a spectrum does not carry at all.
    """
    centred = _centred_windows(windows, "a spectrum")
    n = centred.shape[-1]
    tapered = centred * _hann(n)
    return np.abs(np.fft.rfft(tapered, axis=-1))[..., 1:n // 2 + 1].astype(np.float32)


def envelope(windows: np.ndarray) -> np.ndarray:
    """Envelope of each window (last axis): the magnitude of its analytic signal, mean removed first.

    The classic demodulation of bearing diagnosis: an impact excites a resonance, and
    the envelope keeps when the impacts come and how strong they are (in the window's
    physical units) while dropping the resonance's carrier frequency.
    """
    centred = _centred_windows(windows, "an envelope")
    spectrum = np.fft.fft(centred, axis=-1)
    spectrum *= _analytic_weights(centred.shape[-1])
    return np.abs(np.fft.ifft(spectrum, axis=-1)).astype(np.float32)


@lru_cache(maxsize=4)
def _analytic_weights(n: int) -> np.ndarray:
    """Frequency weights that turn a spectrum into its analytic signal's: positive frequencies doubled."""
    weights = np.zeros(n, dtype=np.float32)
    weights[0] = 1.0
    weights[1:(n + 1) // 2] = 2.0
    if n % 2 == 0:
        weights[n // 2] = 1.0
    return weights


def model_input(raw: np.ndarray, normalization: str) -> np.ndarray:
    """Raw units to the network's float32 input: windows (N, L) -> (N, C, L); images (N, 1, H, W) stay 4-D."""
    x = normalize(raw, normalization)
    if x.ndim == 2:
        x = x[:, None, :]
    return np.ascontiguousarray(x, dtype=np.float32)
