"""The CWRU loader against the real files, and its clear errors on bad ones."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy.io import savemat

from edge.data.cwru import CWRU_CLASSES, estimate_sample_rate, load_cwru, parse_loads, read_cwru_mat
from edge.errors import DataError


@pytest.mark.parametrize("record, expected", [(97, 48000), (105, 12000), (130, 12000), (187, 12000), (236, 12000)])
def test_sampling_rate_is_established_from_shaft_orders(cwru_dir, record, expected):
    samples, rpm = read_cwru_mat(cwru_dir / f"{record}.mat")
    rate, scores = estimate_sample_rate(samples, rpm)
    assert rate == expected
    other = 12000 if expected == 48000 else 48000
    assert scores[expected] - scores[other] > 0.5  # a clear margin, not a coin toss


def test_normal_record_length_agrees_with_48_khz(cwru_dir):
    # 97.mat is ~5 s at 48 kHz; after resampling it must hold 1/4 of its samples.
    dataset = load_cwru(cwru_dir, loads=(0,))
    normal = next(r for r in dataset.records if r.label == "normal")
    assert normal.source_rate_hz == 48000
    assert abs(normal.signal.shape[0] - 243938 / 4) <= 1
    assert any("97.mat: measured sampling rate 48000" in n for n in dataset.notes)


def test_load0_has_all_ten_classes_with_drive_end_signals(cwru_load0):
    assert [r.label for r in sorted(cwru_load0.records, key=lambda r: r.label_index)] == list(CWRU_CLASSES)
    for rec in cwru_load0.records:
        assert rec.signal.dtype == np.float32 and rec.rate_hz == 12000 and rec.channel == "DE"
        assert np.isfinite(rec.signal).all() and rec.signal.std() > 0.01
        assert len(rec.sha256) == 64


def test_fan_end_channel_is_selectable(cwru_dir):
    de, _ = read_cwru_mat(cwru_dir / "105.mat", channel="DE")
    fe, _ = read_cwru_mat(cwru_dir / "105.mat", channel="FE")
    assert de.shape == fe.shape and not np.allclose(de, fe)


def test_missing_normal_baseline_is_substituted_once_and_said(cwru_dir):
    dataset = load_cwru(cwru_dir, loads=(1, 2))
    normals = [r for r in dataset.records if r.label == "normal"]
    assert [r.record for r in normals] == [97]
    assert any(n.startswith("normal: 98.mat (load 1), 99.mat (load 2) not found") for n in dataset.notes)
    assert len(dataset.records) == 1 + 9 * 2


def test_missing_fault_record_is_a_clear_error(cwru_dir, tmp_path):
    for name in ("97.mat", "105.mat"):
        shutil.copy(cwru_dir / name, tmp_path / name)
    with pytest.raises(DataError, match=r"missing CWRU records: 118\.mat \(B007, load 0\)"):
        load_cwru(tmp_path, loads=(0,))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(DataError, match=r"holds none of the 30 CWRU records asked for \(97\.mat, 98\.mat, \.\.\.\); "
                                        "point --data at the folder"):
        load_cwru(elsewhere)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_cwru(tmp_path / "nowhere")


def test_variable_is_picked_by_record_number_when_a_neighbour_is_present(tmp_path):
    path = tmp_path / "99.mat"
    savemat(path, {"X098_DE_time": np.zeros((100, 1)), "X099_DE_time": np.ones((100, 1)),
                   "X099RPM": np.array([[1750]])})
    samples, rpm = read_cwru_mat(path)
    assert samples.tolist() == [1.0] * 100 and rpm == 1750.0


def test_ambiguous_variables_are_refused(tmp_path):
    path = tmp_path / "50.mat"
    savemat(path, {"X098_DE_time": np.zeros((10, 1)), "X099_DE_time": np.ones((10, 1))})
    with pytest.raises(DataError, match="several DE_time variables"):
        read_cwru_mat(path)


def test_file_without_drive_end_channel_is_a_clear_error(tmp_path):
    path = tmp_path / "105.mat"
    savemat(path, {"X105_FE_time": np.zeros((10, 1))})
    with pytest.raises(DataError, match=r"no drive end channel .*X105_FE_time"):
        read_cwru_mat(path)


def test_nan_samples_are_a_clear_error(tmp_path):
    signal = np.ones((1000, 1))
    signal[417] = np.nan
    path = tmp_path / "105.mat"
    savemat(path, {"X105_DE_time": signal})
    with pytest.raises(DataError, match="1 NaN/inf samples \\(first at index 417\\)"):
        read_cwru_mat(path)


def test_corrupted_file_is_a_clear_error(cwru_dir, tmp_path):
    path = tmp_path / "105.mat"
    path.write_bytes((cwru_dir / "105.mat").read_bytes()[:5000])
    with pytest.raises(DataError, match="105.mat"):
        read_cwru_mat(path)


@pytest.mark.parametrize("text", ["", "a", "0,7", "-1"])
def test_bad_loads_are_refused(text):
    with pytest.raises(DataError, match="--loads"):
        parse_loads(text)
