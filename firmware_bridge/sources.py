"""Real data as a sensor would stream it: CWRU records as SAMPLES blocks, images as a conveyor belt of LINEs.

Each source yields ``(message, timestamp_us, encoder)`` in stream order and keeps the
ground truth (which label every sample span or tile carries) for scoring decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from firmware_bridge.protocol import Hello, Line, Message, SampleFormat, Samples, SensorKind

LINE_RATE_HZ = 1250.0  # a line-scan detector on a 1 m/s conveyor (0.8 mm per line)
ACTUATOR_LINES = 625   # the simulated belt's reject actuator: 0.5 m (0.5 s) downstream of the scanner


@dataclass
class StreamSource:
    """A finite stream of sensor messages plus its HELLO and ground truth."""

    hello: Hello
    truth: list[dict] = field(default_factory=list)

    def messages(self) -> Iterator[tuple[Message, int, int]]:
        raise NotImplementedError

    def extent(self) -> tuple[int, int]:
        """(microseconds, encoder counts) one pass of the stream covers; a loop's next lap starts there."""
        raise NotImplementedError


@dataclass
class VibrationSource(StreamSource):
    """CWRU records one after another as int16 SAMPLES blocks at their real rate (12 kHz)."""

    signals: list[np.ndarray] = field(default_factory=list)  # int16 (samples, channels) per record
    block: int = 120                                         # samples per frame: 10 ms at 12 kHz

    def messages(self) -> Iterator[tuple[Message, int, int]]:
        rate = self.hello.rate_hz
        t0 = 0
        for signal in self.signals:
            for start in range(0, signal.shape[0] - self.block + 1, self.block):
                block = signal[start:start + self.block]
                yield Samples(block, self.hello.scale), int(round((t0 + start) * 1e6 / rate)), 0
            t0 += signal.shape[0] - signal.shape[0] % self.block

    def extent(self) -> tuple[int, int]:
        samples = sum(s.shape[0] - s.shape[0] % self.block for s in self.signals)
        return int(round(samples * 1e6 / self.hello.rate_hz)), 0


def held_out_spans(split_doc: dict, split: str = "test") -> dict[str, tuple[int, int]]:
    """{file: (start, stop)} of one split of a training run (its ``split.json``, as
    ``edge.run_files.read_run_files`` reads it): data the model never saw."""
    return {row["file"]: (row["start"], row["stop"]) for row in split_doc["segments"] if row["split"] == split}


def cwru_source(data_dir: str | Path, loads: tuple[int, ...] = (0,), channels: tuple[str, ...] = ("DE",),
                block: int = 120, full_scale_g: float | None = None,
                spans: dict[str, tuple[int, int]] | None = None, rate_hz: int = 12000) -> VibrationSource:
    """CWRU at ``rate_hz`` (every record resampled to it), quantised to int16 like an accelerometer ADC.

    ``channels`` are the record's accelerometers the device streams, in that order (``DE``
    drive end, ``FE`` fan end, ``BA`` base), one axis each.  ``spans`` limits each record to a
    sample range (e.g. a run's held-out test segments, :func:`held_out_spans`); records not
    named are skipped.
    """
    from edge.data.cwru import load_cwru  # build-side reader (scipy); the simulator runs on a workstation

    per_channel = [load_cwru(data_dir, loads=loads, channel=channel, rate_hz=rate_hz) for channel in channels]
    dataset = per_channel[0]
    picked = [k for k, r in enumerate(dataset.records) if spans is None or r.path.name in spans]
    if not picked:
        raise ValueError(f"none of the records in {data_dir} is named in the spans given")
    records = [dataset.records[k] for k in picked]
    axes = [_side_by_side([d.records[k].signal for d in per_channel]) for k in picked]  # (samples, channels)
    peak = full_scale_g or float(max(np.abs(a).max() for a in axes)) * 1.05
    scale = float(np.float32(peak / 32767.0))  # what the wire (float32) carries
    signals, truth, t0 = [], [], 0
    for rec, signal in zip(records, axes):
        a, b = spans[rec.path.name] if spans else (0, signal.shape[0])
        q = np.clip(np.round(signal[a:b] / scale), -32768, 32767).astype(np.int16)
        n = q.shape[0] - q.shape[0] % block
        signals.append(q)
        truth.append({"file": rec.path.name, "label": rec.label, "label_index": rec.label_index,
                      "load_hp": rec.load, "first_sample": t0, "samples": n, "record_start": a,
                      "start_us": int(round(t0 * 1e6 / dataset.rate_hz))})
        t0 += n
    hello = Hello(device_id="sim-cwru", firmware=(1, 0, 0), sensor=SensorKind.VIBRATION,
                  sample_format=SampleFormat.INT16, channels=len(channels), bit_depth=16,
                  rate_hz=float(dataset.rate_hz), scale=scale)
    return VibrationSource(hello=hello, truth=truth, signals=signals, block=block)


def _side_by_side(signals: list[np.ndarray]) -> np.ndarray:
    """One record's accelerometers as (samples, channels), cut to the shortest."""
    n = min(signal.shape[0] for signal in signals)
    return np.stack([signal[:n] for signal in signals], axis=1)


@dataclass
class BeltSource(StreamSource):
    """Image patches side by side across the detector, streamed one line (row) at a time."""

    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint8))  # (lines, pixels)
    bit_depth: int = 8

    def messages(self) -> Iterator[tuple[Message, int, int]]:
        period_us = 1e6 / self.hello.rate_hz
        for i, row in enumerate(self.rows):
            yield Line(row, self.bit_depth), int(round(i * period_us)), i

    def extent(self) -> tuple[int, int]:
        lines = self.rows.shape[0]
        return int(round(lines * 1e6 / self.hello.rate_hz)), lines


def _image_files(root: Path, source: str, subset: str, split: str) -> list[tuple[Path, str]]:
    """``(path, label)`` of the images to lay on the belt: the data set's ``subset`` (X-ray) or any folder
    of images in class folders or with ``<class>_<n>`` names; of a published split, its ``split`` side."""
    from edge.data.images import find_images  # build-side reader, as the CWRU one

    folder = root / subset if source in ("xray", "gdxray") and (root / subset).is_dir() else root
    files = [(path, label) for path, label, published in find_images(folder) if published in (None, split)]
    if not files:
        raise FileNotFoundError(f"no images under {folder}" + (f" for --split {split}" if split else ""))
    return files


def held_out_images(split_doc: dict, data_dir: str | Path, split: str = "test") -> list[tuple[Path, str]]:
    """``(path, label)`` of one split of an image run (its ``split.json``, copies folded): for ``test``,
    images the model never saw."""
    from edge.data.images import label_of

    return [(Path(data_dir) / name, label_of(Path(name))) for name in split_doc["files"][split]]


def belt_source(data_dir: str | Path, source: str = "gdxray", subset: str = "castings", split: str = "test",
                lanes: int | None = None, bands: int = 20, seed: int = 0, bit_depth: int = 8,
                files: list[tuple[Path, str]] | None = None, size: int | None = None) -> BeltSource:
    """A conveyor belt of real patches: ``bands`` rows of ``lanes`` patches, each patch's label its tile truth.

    The patches are drawn from ``files`` (``(path, label)``, e.g. :func:`held_out_images`) when
    given, else from the data set's ``split`` folder.  ``size`` resizes them to ``size`` x
    ``size`` as training does (bilinear, on the grey image): a detector whose pixels match
    the model's input, for a model trained on resized images (NEU's 200 px at 64).
    """
    from PIL import Image

    def grey(path: Path) -> np.ndarray:
        with Image.open(path) as img:
            img = img.convert("L")
            return np.asarray(img.resize((size, size), Image.BILINEAR) if size and img.size != (size, size) else img)

    data_dir = Path(data_dir)
    files = files or _image_files(data_dir, source, subset, split)
    rng = np.random.default_rng(seed)
    h, w = grey(files[0][0]).shape
    lanes = lanes or max(1, 640 // w)
    picks = rng.choice(len(files), size=bands * lanes, replace=len(files) < bands * lanes)
    rows = np.zeros((bands * h, lanes * w), dtype=np.uint16 if bit_depth > 8 else np.uint8)
    truth = []
    shift = bit_depth - 8
    images: dict[int, np.ndarray] = {}  # a long belt repeats its patches: each file is read once
    for k, idx in enumerate(picks):
        band, lane = divmod(k, lanes)
        path, label = files[int(idx)]
        img = images.get(int(idx))
        if img is None:
            img = images[int(idx)] = grey(path)
        if img.shape != (h, w):
            raise ValueError(f"{path}: {img.shape} differs from the belt's patch size {(h, w)}")
        rows[band * h:(band + 1) * h, lane * w:(lane + 1) * w] = img.astype(rows.dtype) << max(shift, 0)
        truth.append({"tile": k, "lane": lane, "encoder_start": band * h, "encoder_end": (band + 1) * h - 1,
                      "pixel_start": lane * w, "pixel_end": (lane + 1) * w - 1, "label": label,
                      "image": str(path.relative_to(data_dir)) if path.is_relative_to(data_dir) else str(path)})
    hello = Hello(device_id=f"sim-{source}", firmware=(1, 0, 0), sensor=SensorKind.LINESCAN,
                  sample_format=SampleFormat.UINT16 if bit_depth > 8 else SampleFormat.UINT8, channels=1,
                  bit_depth=bit_depth, rate_hz=LINE_RATE_HZ, scale=1.0, pixels=rows.shape[1])
    return BeltSource(hello=hello, truth=truth, rows=rows, bit_depth=bit_depth)
