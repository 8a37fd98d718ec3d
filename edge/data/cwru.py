"""Case Western Reserve University bearing data, read from the original ``.mat`` files.

The 10-class task (normal + ball / inner race / outer race @6:00 at 0.007, 0.014 and
0.021 inch) on the drive-end 12 kHz set.  Record numbers follow the data center's
numbering, so a full copy of the CWRU release in its original layout works as it is.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np

from edge.errors import DataError

#: Class names in label order.
CWRU_CLASSES: tuple[str, ...] = (
    "normal",
    "IR007", "B007", "OR007@6",
    "IR014", "B014", "OR014@6",
    "IR021", "B021", "OR021@6",
)

#: Record number of each class at each motor load (hp), drive-end 12 kHz set and
#: the normal baselines.  Loads 1-3 of the normal baseline (98-100.mat) and load 3 of
#: every fault are not in every copy; the loader says what it did without them.
CWRU_RECORDS: dict[str, dict[int, int]] = {
    "normal": {0: 97, 1: 98, 2: 99, 3: 100},
    "IR007": {0: 105, 1: 106, 2: 107, 3: 108},
    "B007": {0: 118, 1: 119, 2: 120, 3: 121},
    "OR007@6": {0: 130, 1: 131, 2: 132, 3: 133},
    "IR014": {0: 169, 1: 170, 2: 171, 3: 172},
    "B014": {0: 185, 1: 186, 2: 187, 3: 188},
    "OR014@6": {0: 197, 1: 198, 2: 199, 3: 200},
    "IR021": {0: 209, 1: 210, 2: 211, 3: 212},
    "B021": {0: 222, 1: 223, 2: 224, 3: 225},
    "OR021@6": {0: 234, 1: 235, 2: 236, 3: 237},
}

#: Nominal shaft speed per load, used only when a file carries no RPM variable.
NOMINAL_RPM: dict[int, float] = {0: 1797.0, 1: 1772.0, 2: 1750.0, 3: 1730.0}

#: The sampling rates CWRU recorded at; the true one of each file is measured, not assumed.
CWRU_RATES_HZ: tuple[int, ...] = (12000, 48000)

CHANNELS: dict[str, str] = {"DE": "drive end", "FE": "fan end", "BA": "base"}


@dataclass
class CwruRecord:
    """One record, resampled to the common rate, with where it came from."""

    record: int
    label: str
    label_index: int
    load: int
    channel: str
    path: Path
    source_rate_hz: int
    rate_hz: int
    rpm: float
    sha256: str
    signal: np.ndarray = field(repr=False)

    def describe(self) -> dict:
        return {
            "file": self.path.name,
            "record": self.record,
            "label": self.label,
            "load_hp": self.load,
            "channel": self.channel,
            "rpm": self.rpm,
            "source_rate_hz": self.source_rate_hz,
            "rate_hz": self.rate_hz,
            "samples": int(self.signal.shape[0]),
            "sha256": self.sha256,
        }


@dataclass
class CwruDataset:
    """The records of one selection (loads, channel, rate) and notes on what was substituted."""

    records: list[CwruRecord]
    classes: tuple[str, ...]
    rate_hz: int
    channel: str
    loads: tuple[int, ...]
    notes: list[str]


def _pick_key(keys: list[str], pattern: str, record: int, what: str, path: Path) -> str | None:
    """Pick the variable matching ``pattern`` (with the record number as group 1).

    Some CWRU files hold a neighbour's variables too (``99.mat`` also holds ``X098_*``),
    so the record's own number wins when several match.
    """
    regex = re.compile(pattern)
    matches = [(k, int(m.group(1))) for k in keys if (m := regex.match(k))]
    if not matches:
        return None
    own = [k for k, number in matches if number == record]
    if own:
        return own[0]
    if len(matches) == 1:
        return matches[0][0]
    names = ", ".join(sorted(k for k, _ in matches))
    raise DataError(f"{path}: several {what} variables ({names}) and none for record {record}; "
                    "cannot tell which one belongs to this file")


def read_cwru_mat(path: Path, record: int | None = None, channel: str = "DE") -> tuple[np.ndarray, float | None]:
    """Return (samples in g as float64, shaft rpm or None) of one channel of a CWRU ``.mat`` file."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    channel = channel.upper()
    if channel not in CHANNELS:
        raise DataError(f"unknown channel {channel!r}; choose one of {', '.join(CHANNELS)}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if record is None:
        record = int(path.stem) if path.stem.isdigit() else -1
    try:
        mat = loadmat(str(path))
    except (MatReadError, ValueError, OSError, TypeError) as exc:
        raise DataError(f"{path}: not a readable MATLAB file ({exc})") from exc
    keys = [k for k in mat if not k.startswith("__")]
    key = _pick_key(keys, rf"^X(\d+)_{channel}_time$", record, f"{channel}_time", path)
    if key is None:
        found = ", ".join(sorted(keys)) or "no variables"
        raise DataError(f"{path}: no {CHANNELS[channel]} channel (*_{channel}_time); the file holds {found}")
    samples = np.asarray(mat[key], dtype=np.float64).reshape(-1)
    if samples.size == 0:
        raise DataError(f"{path}: variable {key} is empty")
    bad = np.flatnonzero(~np.isfinite(samples))
    if bad.size:
        raise DataError(f"{path}: variable {key} holds {bad.size} NaN/inf samples "
                        f"(first at index {bad[0]}); repair or exclude this record")
    rpm_key = _pick_key(keys, r"^X(\d+)RPM$", record, "RPM", path)
    rpm = float(np.asarray(mat[rpm_key]).reshape(-1)[0]) if rpm_key is not None else None
    return samples, rpm


def _order_prominence(freqs: np.ndarray, power: np.ndarray, f0: float) -> float:
    """log10 of the spectral peak at ``f0`` over the median of its neighbourhood."""
    df = freqs[1] - freqs[0]
    dist = np.abs(freqs - f0)
    peak = power[dist <= 1.5 * df]
    ref = power[(dist <= 25 * df) & (dist > 3 * df)]
    if peak.size == 0 or ref.size == 0:
        return 0.0
    return float(np.log10(peak.max() / max(np.median(ref), 1e-30)))


def estimate_sample_rate(samples: np.ndarray, rpm: float,
                         candidates: tuple[int, ...] = CWRU_RATES_HZ) -> tuple[int, dict[int, float]]:
    """Establish a record's true sampling rate from its shaft-speed harmonics.

    Read at the right rate, a rotating machine's spectrum has peaks at integer orders
    of the shaft speed (1x..6x) and little at quarter orders (1.25x, 1.5x, ...).  Read
    at a rate four times too low, every true order k appears at k/4, so quarter orders
    light up.  The score is mean integer-order prominence minus mean quarter-order
    prominence; the best-scoring candidate wins.  Returns (rate, scores per candidate).
    """
    from scipy.signal import welch

    x = np.asarray(samples, dtype=np.float64)
    x = x - x.mean()
    shaft_hz = rpm / 60.0
    nperseg = int(min(1 << 15, x.size))
    integer_orders = (1, 2, 3, 4, 5, 6)
    quarter_orders = (1.25, 1.5, 1.75, 2.25, 2.5, 2.75)
    scores: dict[int, float] = {}
    for rate in candidates:
        freqs, power = welch(x, fs=rate, nperseg=nperseg)
        on = np.mean([_order_prominence(freqs, power, k * shaft_hz) for k in integer_orders])
        off = np.mean([_order_prominence(freqs, power, k * shaft_hz) for k in quarter_orders])
        scores[rate] = float(on - off)
    best = max(scores, key=scores.__getitem__)
    return best, scores


def resample(samples: np.ndarray, source_rate_hz: int, rate_hz: int) -> np.ndarray:
    """Anti-aliased polyphase resampling (scipy ``resample_poly``)."""
    if source_rate_hz == rate_hz:
        return samples
    from scipy.signal import resample_poly

    g = gcd(int(source_rate_hz), int(rate_hz))
    return resample_poly(samples, int(rate_hz) // g, int(source_rate_hz) // g)


def file_sha256(path: Path) -> str:
    """Content hash of a file: how a run recognises a record or image it was trained on, whatever its path."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _find_file(data_dir: Path, record: int) -> Path | None:
    for name in (f"{record}.mat", f"{record}.MAT"):
        candidate = data_dir / name
        if candidate.is_file():
            return candidate
    return None


def parse_loads(text: str) -> tuple[int, ...]:
    """Parse ``"0,1,2"`` into a tuple of loads, with a clear error."""
    try:
        loads = tuple(sorted({int(part) for part in text.split(",") if part.strip() != ""}))
    except ValueError:
        raise DataError(f"--loads expects comma-separated motor loads in hp (0-3), got {text!r}") from None
    if not loads or any(load not in NOMINAL_RPM for load in loads):
        raise DataError(f"--loads expects motor loads among 0,1,2,3, got {text!r}")
    return loads


def load_cwru(data_dir: str | Path, loads: tuple[int, ...] = (0, 1, 2), channel: str = "DE",
              rate_hz: int = 12000, classes: tuple[str, ...] = CWRU_CLASSES) -> CwruDataset:
    """Read the records of ``classes`` at ``loads`` and resample them all to ``rate_hz``.

    A missing normal baseline for a load (``98-100.mat`` are absent from some copies) is
    replaced once by the normal record of another load, and the substitution is noted;
    a missing fault record is an error, since no substitute exists.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist; point --data at a folder of CWRU .mat files")
    unknown = [c for c in classes if c not in CWRU_RECORDS]
    if unknown:
        raise DataError(f"unknown CWRU classes {unknown}; known: {', '.join(CWRU_CLASSES)}")
    notes: list[str] = []
    wanted: list[tuple[str, int, int, Path]] = []
    missing: list[str] = []
    for label in classes:
        found = [(load, _find_file(data_dir, CWRU_RECORDS[label][load])) for load in loads]
        present = [(load, path) for load, path in found if path is not None]
        absent = [load for load, path in found if path is None]
        if label == "normal" and absent:
            if not present:
                fallback = [(load, p) for load in sorted(NOMINAL_RPM)
                            if (p := _find_file(data_dir, CWRU_RECORDS[label][load])) is not None]
                if not fallback:
                    missing.extend(f"{CWRU_RECORDS[label][load]}.mat" for load in absent)
                    continue
                present = fallback[:1]
            names = ", ".join(f"{CWRU_RECORDS[label][load]}.mat (load {load})" for load in absent)
            used = ", ".join(f"{p.name} (load {load})" for load, p in present)
            notes.append(f"normal: {names} not found; normal windows come from {used} only "
                         "(disjoint time segments of it in train/validation/test)")
        else:
            missing.extend(f"{CWRU_RECORDS[label][load]}.mat ({label}, load {load})" for load in absent)
        wanted.extend((label, load, CWRU_RECORDS[label][load], path) for load, path in present)
    if missing and not wanted:  # not a CWRU copy at all (or the wrong folder): thirty names would say less
        shown = ", ".join(missing[:2]) + (", ..." if len(missing) > 2 else "")
        raise DataError(f"{data_dir} holds none of the {len(missing)} CWRU records asked for ({shown}); point "
                        "--data at the folder of CWRU .mat files")
    if missing:
        raise DataError(f"{data_dir}: missing CWRU records: {'; '.join(missing)}. "
                        "Choose loads this copy holds (--loads) or point --data at a full copy.")

    records: list[CwruRecord] = []
    for label, load, number, path in wanted:
        samples, rpm = read_cwru_mat(path, number, channel)
        rpm = rpm if rpm else NOMINAL_RPM[load]
        source_rate, _ = estimate_sample_rate(samples, rpm)
        if source_rate != rate_hz:
            notes.append(f"{path.name}: measured sampling rate {source_rate} Hz "
                         f"(shaft-order test), resampled to {rate_hz} Hz")
        signal = resample(samples, source_rate, rate_hz).astype(np.float32)
        records.append(CwruRecord(record=number, label=label, label_index=classes.index(label), load=load,
                                  channel=channel.upper(), path=path, source_rate_hz=source_rate,
                                  rate_hz=rate_hz, rpm=rpm, sha256=file_sha256(path),
                                  signal=signal))
    return CwruDataset(records=records, classes=tuple(classes), rate_hz=rate_hz,
                       channel=channel.upper(), loads=tuple(loads), notes=notes)
