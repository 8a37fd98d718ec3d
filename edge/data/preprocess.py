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
#: grey levels, stays in the input.  ``highpass-image`` removes the image's smooth background
#: (a Gaussian blur, see ``highpass``) before the z-score, so only what is small remains.
#: ``spectrum`` turns a vibration window of L samples into its amplitude spectrum (L/2 bins,
#: see ``amplitude_spectrum``); ``envelope`` into its envelope in physical units (L samples,
#: see ``envelope``); ``raw+envelope`` gives two input channels, the window as it is (as
#: ``none``) and its envelope.
NORMALIZATIONS: tuple[str, ...] = ("zscore", "zscore-image", "center-image", "highpass-image", "spectrum", "envelope",
                                   "raw+envelope", "none")
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
    if method == "highpass-image":
        return normalize(highpass(x), "zscore-image", eps)
    axes = (-1,) if method == "zscore" else (-2, -1)
    # numpy's std, spelled out so the centred copy is made once and divided in place: the same
    # numbers, about a third less time per window on the gateway.
    centred = x - x.mean(axis=axes, keepdims=True)
    if method == "center-image":
        return centred
    std = np.sqrt(np.mean(np.square(centred), axis=axes, keepdims=True))
    centred /= std + eps
    return centred


#: The background ``highpass`` removes: a Gaussian blur whose sigma is this share of the
#: image's side (4 px on a 32 px patch), wider than a blow hole's few pixels.
HIGHPASS_SIGMA = 1 / 8


def highpass(images: np.ndarray) -> np.ndarray:
    """Each image (last two axes) minus its Gaussian blur (sigma ``HIGHPASS_SIGMA`` of its side, edges mirrored).

    A flaw in an X-ray image is a small local change of grey level; the casting's own
    thickness, its edges' slow ramps and the detector's shading vary from part to part and
    from one series to the next.  Removing what is smooth leaves the flaw on any background.
    """
    x = np.asarray(images, dtype=np.float32)
    rows, cols = _blur_matrix(x.shape[-2]), _blur_matrix(x.shape[-1])
    return x - rows @ x @ cols.T


@lru_cache(maxsize=4)
def _blur_matrix(n: int) -> np.ndarray:
    """(n, n) matrix of a Gaussian blur along one axis of n pixels, with mirrored (symmetric) edges:
    a blur of an image is ``B_rows @ image @ B_cols.T``, a matrix product that numpy batches."""
    sigma = max(HIGHPASS_SIGMA * n, 0.5)
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    matrix = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for offset, weight in zip(range(-radius, radius + 1), taps):
            j = i + offset
            while not 0 <= j < n:              # mirror at the edges until inside (radius may exceed n)
                j = -j - 1 if j < 0 else 2 * n - j - 1
            matrix[i, j] += weight
    return matrix.astype(np.float32)


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


def tile_input(patches: np.ndarray, normalization: str) -> np.ndarray:
    """A line-scan tile's patches (lanes, H, W) to the network's float32 input (lanes, 1, H, W), one batch."""
    return np.ascontiguousarray(normalize(patches, normalization)[:, None], dtype=np.float32)
