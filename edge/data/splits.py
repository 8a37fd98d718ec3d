"""Leak-free splits: contiguous time segments of each record, windows cut inside them.

Every record is cut in time into train | gap | validation | gap | test.  Windows are
cut only inside one segment, so no window overlaps a window of another split; the
gap (one window by default) keeps the segments apart in time as well.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edge.errors import DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSpec:
    """Fractions of each record given to train / validation / test, in time order."""

    train: float = 0.70
    val: float = 0.15
    test: float = 0.15
    gap: int | None = None  # samples between segments; None means one window

    def __post_init__(self) -> None:
        fractions = (self.train, self.val, self.test)
        if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
            raise DataError(f"split fractions must be >= 0 and sum to 1, got {fractions}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Segment:
    """One contiguous time segment of one record, assigned to one split."""

    record: int
    label_index: int
    load: int
    split: str
    start: int
    stop: int
    signal: np.ndarray

    def __len__(self) -> int:
        return self.stop - self.start


def segment_bounds(n_samples: int, window: int, spec: SplitSpec) -> dict[str, tuple[int, int]]:
    """(start, stop) sample bounds of each split of one record."""
    gap = window if spec.gap is None else spec.gap
    usable = n_samples - 2 * gap
    if usable <= 0:
        raise DataError(f"a record of {n_samples} samples is too short to split with gaps of {gap} samples; "
                        "use a shorter window or a longer record")
    bounds: dict[str, tuple[int, int]] = {}
    start = 0
    for i, (name, fraction) in enumerate(zip(SPLITS, (spec.train, spec.val, spec.test))):
        stop = n_samples if i == len(SPLITS) - 1 else start + int(round(fraction * usable))
        bounds[name] = (start, stop)
        start = stop + gap
    return bounds


def split_records(records: list, window: int, spec: SplitSpec) -> list[Segment]:
    """Cut every record into its split segments; each non-empty split must hold a window."""
    if window < 2:
        raise DataError(f"window length must be at least 2 samples, got {window}")
    segments: list[Segment] = []
    for rec in records:
        n = int(rec.signal.shape[0])
        for name, (start, stop) in segment_bounds(n, window, spec).items():
            fraction = getattr(spec, name)
            if fraction == 0:
                continue
            if stop - start < window:
                raise DataError(
                    f"record {rec.record} ({n} samples at {rec.rate_hz} Hz) leaves {max(stop - start, 0)} "
                    f"samples for its {name} segment, fewer than one window of {window}; "
                    "use a shorter window or other split fractions")
            segments.append(Segment(record=rec.record, label_index=rec.label_index, load=rec.load,
                                    split=name, start=start, stop=stop, signal=rec.signal[start:stop]))
    return segments


def cut_windows(signal: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Windows of ``length`` every ``hop`` samples (a read-only view, no copy)."""
    if hop < 1:
        raise DataError(f"hop must be at least 1 sample, got {hop}")
    if signal.shape[0] < length:
        raise DataError(f"a window of {length} samples is longer than the {signal.shape[0]} samples given")
    return np.lib.stride_tricks.sliding_window_view(signal, length)[::hop]


def windows_of(segments: list[Segment], split: str, length: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows of one split as (float32 array (n, length), int64 labels (n,))."""
    xs, ys = [], []
    for seg in segments:
        if seg.split != split:
            continue
        w = cut_windows(seg.signal, length, hop)
        xs.append(w)
        ys.append(np.full(w.shape[0], seg.label_index, dtype=np.int64))
    if not xs:
        raise DataError(f"no {split} windows: the split is empty")
    return np.ascontiguousarray(np.concatenate(xs), dtype=np.float32), np.concatenate(ys)


class RandomWindowSampler:
    """Class-balanced random windows from the training segments, drawn anew every batch.

    Each draw picks a class uniformly, a segment of that class with probability
    proportional to its length, and a uniform offset inside it, so a class recorded
    for 5 s weighs as much as one recorded for 30 s.

    ``speed_jitter`` > 0 resamples each window as if the shaft turned up to that
    fraction faster or slower (a window of ``length * s`` samples stretched to
    ``length``, ``s`` uniform in ``1 +/- speed_jitter``): fault frequencies scale with
    shaft speed, and speed is what changes with the motor load.
    """

    def __init__(self, segments: list[Segment], length: int, rng: np.random.Generator,
                 speed_jitter: float = 0.0):
        if not 0.0 <= speed_jitter < 0.5:
            raise ValueError(f"speed jitter must be in [0, 0.5), got {speed_jitter}")
        self.length = length
        self.rng = rng
        self.speed_jitter = speed_jitter
        self.span = int(np.ceil(length * (1.0 + speed_jitter)))   # longest source window
        self.segments = [s for s in segments if s.split == "train"]
        if not self.segments:
            raise DataError("no training segments to sample from")
        self.by_class: dict[int, tuple[list[Segment], np.ndarray]] = {}
        for label in sorted({s.label_index for s in self.segments}):
            segs = [s for s in self.segments if s.label_index == label]
            room = np.array([len(s) - self.span + 1 for s in segs], dtype=np.float64)
            if (room < 1).any():
                raise DataError(f"a training segment of class {label} is shorter than {self.span} samples")
            self.by_class[label] = (segs, room / room.sum())
        self.labels = np.array(sorted(self.by_class), dtype=np.int64)

    def draw(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        labels = self.rng.choice(self.labels, size=batch)
        out = np.empty((batch, self.length), dtype=np.float32)
        for i, label in enumerate(labels):
            segs, weights = self.by_class[int(label)]
            seg = segs[self.rng.choice(len(segs), p=weights)]
            offset = self.rng.integers(0, len(seg) - self.span + 1)
            if self.speed_jitter:
                n = int(round(self.length * self.rng.uniform(1.0 - self.speed_jitter, 1.0 + self.speed_jitter)))
                source = seg.signal[offset:offset + n]
                out[i] = np.interp(np.linspace(0.0, n - 1, self.length), np.arange(n), source)
            else:
                out[i] = seg.signal[offset:offset + self.length]
        return out, labels.astype(np.int64)


def describe_split(segments: list[Segment], records: list, spec: SplitSpec, window: int,
                   hops: dict[str, int]) -> dict:
    """A JSON description of the split, written into every run."""
    by_record = {r.record: r for r in records}
    rows = []
    for seg in segments:
        rate = by_record[seg.record].rate_hz
        rows.append({
            "record": seg.record, "file": by_record[seg.record].path.name, "label": by_record[seg.record].label,
            "load_hp": seg.load, "split": seg.split, "start": seg.start, "stop": seg.stop,
            "start_s": round(seg.start / rate, 4), "stop_s": round(seg.stop / rate, 4),
            "windows": int((len(seg) - window) // hops[seg.split] + 1),
        })
    return {
        "method": "contiguous time segments per record (train | gap | val | gap | test); "
                  "windows cut inside one segment only",
        "fractions": spec.to_dict(),
        "gap_samples": window if spec.gap is None else spec.gap,
        "window": window,
        "hop": hops,
        "segments": rows,
    }
