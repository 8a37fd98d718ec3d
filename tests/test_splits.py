"""Leak-free splits: no window of one split overlaps a window of another."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.data.cwru import CwruRecord
from edge.data.splits import (RandomWindowSampler, SplitSpec, cut_windows, describe_split, segment_bounds,
                              split_records, windows_of)
from edge.errors import DataError


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2_000, 300_000), window=st.integers(2, 4096),
       train=st.floats(0.3, 0.8), val=st.floats(0.05, 0.3))
def test_segments_are_ordered_disjoint_and_gapped(n, window, train, val):
    test = 1.0 - train - val
    if test < 0.05:
        return
    spec = SplitSpec(train, val, test)
    if n <= 2 * window:
        with pytest.raises(DataError, match="too short"):
            segment_bounds(n, window, spec)
        return
    bounds = segment_bounds(n, window, spec)
    (a0, a1), (b0, b1), (c0, c1) = bounds["train"], bounds["val"], bounds["test"]
    assert 0 == a0 <= a1 and c1 == n
    assert b0 - a1 == window and c0 - b1 == window  # one window of gap between segments


def _record(n: int, label: int = 0) -> CwruRecord:
    from pathlib import Path

    return CwruRecord(record=900 + label, label="x", label_index=label, load=0, channel="DE", path=Path("x.mat"),
                      source_rate_hz=12000, rate_hz=12000, rpm=1797.0, sha256="0" * 64,
                      signal=np.arange(n, dtype=np.float32))


@pytest.mark.parametrize("window", [400, 1024, 2048])
def test_no_window_crosses_a_split(window):
    # The signal is its own sample index, so a window's first value says where it starts.
    segments = split_records([_record(121_265)], window, SplitSpec())
    spans = {}
    for split in ("train", "val", "test"):
        x, _ = windows_of(segments, split, window, window // 4)
        spans[split] = (x[:, 0].min(), x[:, -1].max())
        assert x.shape[1] == window
    assert spans["train"][1] + window < spans["val"][0]
    assert spans["val"][1] + window < spans["test"][0]


@pytest.mark.parametrize("window", [400, 1024, 2048])
def test_real_records_window_at_every_supported_length(cwru_load0, window):
    segments = split_records(cwru_load0.records, window, SplitSpec())
    for split in ("train", "val", "test"):
        x, y = windows_of(segments, split, window, window // 2)
        assert x.shape[1] == window and set(y.tolist()) == set(range(10))


def test_sampler_draws_balanced_classes_from_train_segments_only():
    records = [_record(50_000, 0), _record(200_000, 1)]
    segments = split_records(records, 1024, SplitSpec())
    sampler = RandomWindowSampler(segments, 1024, np.random.default_rng(0))
    x, y = sampler.draw(4000)
    assert abs(np.mean(y == 0) - 0.5) < 0.05  # a short record weighs as much as a long one
    for label in (0, 1):
        train = next(s for s in segments if s.split == "train" and s.label_index == label)
        starts = x[y == label, 0]
        assert starts.min() >= train.start and starts.max() + 1024 <= train.stop
        assert np.all(np.diff(x[y == label], axis=1) == 1)  # contiguous windows


def test_window_longer_than_a_segment_is_a_clear_error():
    with pytest.raises(DataError, match="fewer than one window of 4096"):
        split_records([_record(10_000)], 4096, SplitSpec())
    with pytest.raises(DataError, match="longer than"):
        cut_windows(np.zeros(100, dtype=np.float32), 200, 1)


def test_bad_split_fractions_are_refused():
    with pytest.raises(DataError, match="sum to 1"):
        SplitSpec(0.8, 0.3, 0.1)


def test_split_description_lists_every_segment_in_seconds():
    records = [_record(121_265)]
    segments = split_records(records, 2048, SplitSpec())
    doc = describe_split(segments, records, SplitSpec(), 2048, {"train": 1, "val": 1024, "test": 256})
    assert [row["split"] for row in doc["segments"]] == ["train", "val", "test"]
    assert doc["gap_samples"] == 2048
    test_row = doc["segments"][2]
    assert test_row["stop_s"] == pytest.approx(121_265 / 12000, abs=1e-3)
    assert test_row["windows"] == (test_row["stop"] - test_row["start"] - 2048) // 256 + 1


def test_speed_jitter_stretches_windows_within_the_training_segment():
    records = [_record(200_000, 0), _record(200_000, 1)]
    segments = split_records(records, 1024, SplitSpec())
    sampler = RandomWindowSampler(segments, 1024, np.random.default_rng(0), speed_jitter=0.05)
    x, y = sampler.draw(2000)
    steps = np.diff(x, axis=1)                                  # the signal is its own sample index
    per_window = steps.mean(axis=1)
    assert np.all(np.abs(steps - per_window[:, None]) < 2e-2)   # one uniform stretch (float32 at ~1e5)
    assert per_window.min() < 0.97 and per_window.max() > 1.03  # the whole +/-5 % range is used
    assert per_window.min() > 0.95 - 1e-3 and per_window.max() < 1.05 + 1e-3
    for label in (0, 1):
        train = next(s for s in segments if s.split == "train" and s.label_index == label)
        assert x[y == label].min() >= train.start and x[y == label].max() < train.stop


def test_speed_jitter_out_of_range_is_refused():
    segments = split_records([_record(50_000, 0)], 1024, SplitSpec())
    with pytest.raises(ValueError, match="speed jitter"):
        RandomWindowSampler(segments, 1024, np.random.default_rng(0), speed_jitter=0.7)
