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
