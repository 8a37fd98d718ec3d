"""Noise lands at the SNR asked for, per window, for every kind."""

from __future__ import annotations

import numpy as np
import pytest

from edge.data.noise import add_noise, parse_snr_list, parse_snr_range
from edge.errors import DataError


@pytest.mark.parametrize("kind", ["gaussian", "pink", "laplacian"])
@pytest.mark.parametrize("snr", [-4.0, 0.0, 8.0])
def test_measured_snr_matches_target(cwru_load0, kind, snr):
    windows = np.stack([r.signal[:2048] for r in cwru_load0.records])
    noisy = add_noise(windows, snr, np.random.default_rng(1), kind)
    noise = noisy.astype(np.float64) - windows
    measured = 10 * np.log10(np.mean(windows.astype(np.float64) ** 2, axis=1) / np.mean(noise ** 2, axis=1))
    assert np.allclose(measured, snr, atol=1e-3)
    assert noisy.dtype == windows.dtype


def test_one_snr_per_window():
    x = np.random.default_rng(0).standard_normal((3, 4096)).astype(np.float32)
    snr = np.array([-6.0, 0.0, 12.0])
    noise = add_noise(x, snr, np.random.default_rng(2)) - x
    measured = 10 * np.log10(np.mean(x ** 2, axis=1) / np.mean(noise ** 2, axis=1))
    assert np.allclose(measured, snr, atol=1e-3)


def test_noise_is_reproducible_from_its_seed():
    x = np.ones((2, 100), dtype=np.float32)
    a = add_noise(x, 0.0, np.random.default_rng(5))
    b = add_noise(x, 0.0, np.random.default_rng(5))
    c = add_noise(x, 0.0, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_snr_parsing():
    assert parse_snr_list("-4,0,4,8,none") == [-4.0, 0.0, 4.0, 8.0, None]
    assert parse_snr_range("-6:10") == (-6.0, 10.0)
    assert parse_snr_range("none") is None
    for bad in ("x", ""):
        with pytest.raises(DataError):
            parse_snr_list(bad)
    with pytest.raises(DataError, match="LO above HI"):
        parse_snr_range("10:-6")
    with pytest.raises(DataError, match="unknown noise kind"):
        add_noise(np.ones((1, 8)), 0.0, np.random.default_rng(0), "brown")


def test_recorded_noise_is_cut_from_the_recording_at_the_asked_snr(tmp_path):
    from edge.data.noise import add_noise, load_noise_recording

    rng = np.random.default_rng(0)
    hum = np.sin(2 * np.pi * 50 * np.arange(60_000) / 12_000)          # a 50 Hz hum, recorded
    np.save(tmp_path / "hum.npy", hum)
    x = rng.standard_normal((8, 2048)).astype(np.float32)
    noisy = add_noise(x, -4.0, rng, f"file:{tmp_path / 'hum.npy'}")
    noise = noisy.astype(np.float64) - x
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2, axis=1) / np.mean(noise ** 2, axis=1))
    np.testing.assert_allclose(snr, -4.0, atol=0.05)
    spectrum = np.abs(np.fft.rfft(noise[0]))
    assert abs(np.argmax(spectrum) * 12_000 / 2048 - 50) < 6                 # it is the hum, not white noise
    with pytest.raises(DataError, match="does not exist"):
        load_noise_recording(str(tmp_path / "missing.npy"))
    np.save(tmp_path / "bad.npy", np.array([1.0, np.nan, 2.0]))
    with pytest.raises(DataError, match="NaN"):
        load_noise_recording(str(tmp_path / "bad.npy"))


def test_normalisation_is_numpys_zscore_per_window_and_per_image(cwru_load0):
    """The gateway's preprocessing must stay the z-score the model was trained on, window by window."""
    from edge.data.preprocess import normalize

    windows = np.stack([r.signal[:2048] for r in cwru_load0.records[:4]]).astype(np.float32) * 7 + 3
    ref = (windows - windows.mean(-1, keepdims=True)) / (windows.std(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(normalize(windows, "zscore"), ref, rtol=1e-5, atol=1e-5)
    images = windows.reshape(4, 32, 64)
    ref = (images - images.mean((-2, -1), keepdims=True)) / (images.std((-2, -1), keepdims=True) + 1e-6)
    np.testing.assert_allclose(normalize(images, "zscore-image"), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize(windows, "minmax")


def test_spectrum_input_is_the_tapered_amplitude_spectrum_blind_to_gain_and_phase(cwru_load0):
    """A window of L samples becomes L/2 z-scored bins; a tone lands in its bin whatever its phase or gain."""
    from edge.data.preprocess import normalize

    t = np.arange(1024)
    tones = np.stack([a * np.sin(2 * np.pi * 37 * t / 1024 + phase) + 5
                      for a, phase in ((1.0, 0.0), (20.0, 1.3), (0.01, 2.9))]).astype(np.float32)
    x = normalize(tones, "spectrum")
    assert x.shape == (3, 512) and x.dtype == np.float32
    assert list(x.argmax(axis=1)) == [36, 36, 36]                  # bin 37; bin 0 (the mean) is dropped
    np.testing.assert_allclose(x[1], x[0], atol=1e-3)
    np.testing.assert_allclose(x[2], x[0], atol=1e-3)
    windows = np.stack([r.signal[:1024] for r in cwru_load0.records[:4]]).astype(np.float32)
    spectrum = np.abs(np.fft.rfft((windows - windows.mean(-1, keepdims=True)) * np.hanning(1024), axis=-1))[:, 1:]
    ref = (spectrum - spectrum.mean(-1, keepdims=True)) / (spectrum.std(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(normalize(windows, "spectrum"), ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        normalize(windows[:, :1], "spectrum")


def test_envelope_input_recovers_the_modulation_of_a_resonance_in_physical_units(cwru_load0):
    """An amplitude-modulated carrier gives back its modulation; the level (gain) is kept, the offset is not."""
    from scipy.signal import hilbert

    from edge.data.preprocess import normalize

    t = np.arange(2048) / 12_000
    modulation = 1.0 + 0.5 * np.cos(2 * np.pi * 93.75 * t)          # impacts at a fault frequency
    burst = (modulation * np.cos(2 * np.pi * 3000 * t)).astype(np.float32)  # on a 3 kHz resonance
    x = normalize(np.stack([burst, 4 * burst + 7]), "envelope")
    assert x.shape == (2, 2048) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], modulation, atol=1e-3)
    np.testing.assert_allclose(x[1], 4 * x[0], rtol=1e-4, atol=1e-4)   # physical units: gain kept, mean removed
    windows = np.stack([r.signal[:2047] for r in cwru_load0.records[:4]]).astype(np.float32)  # odd length too
    reference = np.abs(hilbert(windows - windows.mean(-1, keepdims=True), axis=-1))
    np.testing.assert_allclose(normalize(windows, "envelope"), reference, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 samples"):
        normalize(windows[:, :1], "envelope")


def test_raw_and_envelope_input_gives_two_channels_the_network_reads_both(cwru_load0):
    from edge.data.preprocess import input_channels, model_input, normalize

    windows = np.stack([r.signal[:2048] for r in cwru_load0.records[:4]]).astype(np.float32)
    x = model_input(windows, "raw+envelope")
    assert x.shape == (4, 2, 2048) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(x[:, 0], normalize(windows, "none"))
    np.testing.assert_array_equal(x[:, 1], normalize(windows, "envelope"))
    assert model_input(windows[:1], "raw+envelope").shape == (1, 2, 2048)  # one window on the gateway
    assert [input_channels(n) for n in ("zscore", "envelope", "raw+envelope")] == [1, 1, 2]


def test_gain_jitter_scales_whole_windows_within_its_bound_and_is_seeded(cwru_load0):
    from edge.train.settings import TrainSettings
    from edge.train.trainer import augment

    signal = cwru_load0.records[3].signal
    x = np.stack([signal[i * 2048:(i + 1) * 2048] for i in range(32)]).astype(np.float32)
    x = x[:, np.all(x != 0, axis=0)]  # divide by non-zero samples only
    settings = TrainSettings(gain_jitter=0.25, snr_train=None)
    y = augment(x, settings, np.random.default_rng(5))
    gains = (y / x)[:, :1]
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.allclose(y / x, gains, rtol=1e-5)  # one gain per window, the waveform untouched
    assert 1 / 1.25 - 1e-6 <= gains.min() < 0.9 and 1.1 < gains.max() <= 1.25 + 1e-6
    assert np.array_equal(y, augment(x, settings, np.random.default_rng(5)))
    assert augment(x, TrainSettings(snr_train=None), np.random.default_rng(5)) is x


def test_band_jitter_filters_each_window_by_its_own_smooth_gain_curve_within_its_bound(cwru_load0):
    from edge.train.settings import TrainSettings
    from edge.train.trainer import BAND_KNOTS, augment

    signal = cwru_load0.records[3].signal
    x = np.stack([signal[i * 2048:(i + 1) * 2048] for i in range(16)]).astype(np.float32)
    settings = TrainSettings(band_jitter=6.0, snr_train=None)
    y = augment(x, settings, np.random.default_rng(5))
    assert y.dtype == np.float32 and y.shape == x.shape
    spectrum_x, spectrum_y = np.fft.rfft(x.astype(np.float64)), np.fft.rfft(y.astype(np.float64))
    strong = np.abs(spectrum_x) > 1e-2 * np.abs(spectrum_x).max(axis=1, keepdims=True)
    gain_db = np.where(strong, 20 * np.log10(np.abs(spectrum_y) / np.maximum(np.abs(spectrum_x), 1e-30)), np.nan)
    assert -6.0 - 0.05 < np.nanmin(gain_db) < -3.0 and 3.0 < np.nanmax(gain_db) < 6.0 + 0.05
    shared = strong.sum(axis=0) >= 4
    assert np.nanstd(gain_db[:, shared], axis=0).mean() > 1.0  # each window its own curve
    # Smooth: from one bin to the next at most 12 dB per knot spacing (from -6 to +6 dB).
    per_bin = 12.0 / ((x.shape[1] // 2) / (BAND_KNOTS - 1))
    assert np.nanmax(np.abs(np.diff(gain_db, axis=1))) <= per_bin + 0.02
    assert np.array_equal(y, augment(x, settings, np.random.default_rng(5)))
