"""Turn the frame stream into units of decision: sliding vibration windows, or line-scan tiles.

Each unit carries where it came from (sample or encoder span, device time) and the
monotonic time at which its last sample or line arrived: the start of its latency
budget.  Gaps in the stream (lost frames) are not papered over: a window that would
straddle a gap is dropped and counted, and the assembler starts afresh after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Unit:
    """One window or tile, ready to preprocess."""

    data: np.ndarray          # vibration: (channels, window) float32 in physical units;
                              # line-scan: (lanes, lines, patch width), one patch per lane
    start: int                # first sample index or first encoder count
    end: int                  # last sample index or last encoder count (inclusive)
    device_time_us: int       # device time of the last sample or line
    arrived: float            # time.monotonic() when the last sample or line arrived
    lanes: int = 1            # line-scan: patches side by side in ``data`` (lane k feeds actuator k), one batch
    encoder_epoch: int = 0    # line-scan: which run of the device's encoder count ``start`` and ``end`` belong to
    seen: bool = True         # line-scan: False for belt lost in a gap of the stream (``data`` holds no line):
                              # its parts were never inspected, and get the fail-safe
    passed: bool = False      # line-scan: belt lost in a gap that had passed the actuator when the stream went
                              # on (one unit for the whole stretch): logged, every lane, with no REJECT to send


@dataclass
class AssemblerStats:
    units: int = 0
    gaps: int = 0             # discontinuities that reset the assembler
    samples_discarded: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class VibrationAssemblerStats(AssemblerStats):
    seconds_undecided: float = 0.0  # signal no window holds: from the last window cut across each gap in the
                                    # stream (frames lost or corrupted, a restart) to where it went on


@dataclass
class LineAssemblerStats(AssemblerStats):
    lines_unusable: int = 0   # too narrow for one patch: discarded, nothing on them is inspected
    encoder_restarts: int = 0  # the encoder count went back (a device that restarted counts from 0 again)
    lines_unseen: int = 0     # belt in a gap of the encoder count (lines lost on the way), no tile inspected
    unseen_tiles: int = 0     # tiles of it still upstream of the actuator when the stream went on: fail-safe
    lines_unseen_passed: int = 0  # of lines_unseen, those already past the actuator then: unchecked
    passed_spans: int = 0     # stretches of those lines, one per gap: each logged as one unit (``Unit.passed``)


#: Seconds a gap in a vibration stream may skip beyond the time that passed between the reads around it.
GAP_SLACK_S = 0.5


class VibrationAssembler:
    """Sliding windows of ``window`` samples every ``hop`` samples, per channel, from SAMPLES blocks."""

    def __init__(self, window: int, hop: int, channel: int = 0, rate_hz: float = 12000.0):
        if window < 1 or hop < 1:
            raise ValueError("window and hop must be positive")
        self.window, self.hop, self.channel, self.rate_hz = window, hop, channel, rate_hz
        self.period_us = 1e6 / rate_hz
        self.stats = VibrationAssemblerStats()
        self._buffer = np.zeros(0, dtype=np.float32)
        self._first = 0           # sample index of _buffer[0]
        self._next_end = window   # sample index (exclusive) at which the next window completes
        self._decided_to = 0      # sample index (exclusive) up to which windows cut so far hold the stream
        self._arrived = 0.0       # when the latest read's blocks arrived
        self._expected_us: int | None = None

    def push(self, samples: np.ndarray, scale: float, timestamp_us: int, arrived: float) -> list[Unit]:
        """Add one block (count, channels) of raw integers; return the windows it completes."""
        return self.push_blocks([(samples, scale, timestamp_us)], arrived)

    def push_blocks(self, blocks: list[tuple[np.ndarray, float, int]], arrived: float) -> list[Unit]:
        """Add the blocks of one read, ``(samples, scale, timestamp_us)`` each; return the windows they complete.

        The blocks are joined once and cut once: a read after a paced sleep holds most of a
        window's frames, and one join costs what one block used to.
        """
        units: list[Unit] = []
        pending: list[np.ndarray] = []
        for samples, scale, timestamp_us in blocks:
            if self._expected_us is not None and abs(timestamp_us - self._expected_us) > self.period_us:
                units += self._cut(pending, arrived)
                pending = []
                self._count_undecided(timestamp_us, arrived)
                self._reset(timestamp_us)
            if self._expected_us is None:
                self._first = self._decided_to = int(round(timestamp_us / self.period_us))
                self._next_end = self._first + self.window
            self._expected_us = timestamp_us + int(round(samples.shape[0] * self.period_us))
            pending.append(samples[:, self.channel].astype(np.float32) * np.float32(scale))
        self._arrived = arrived
        return units + self._cut(pending, arrived)

    def _cut(self, blocks: list[np.ndarray], arrived: float) -> list[Unit]:
        """Append ``blocks`` to the buffer and cut every window that is now complete."""
        if not blocks:
            return []
        self._buffer = np.concatenate([self._buffer, *blocks])
        units = []
        last = self._first + self._buffer.shape[0]
        while self._next_end <= last:
            a = self._next_end - self.window - self._first
            units.append(Unit(self._buffer[a:a + self.window][None, :].copy(), self._next_end - self.window,
                              self._next_end - 1, int(round((self._next_end - 1) * self.period_us)), arrived))
            self._next_end += self.hop
        if units:
            self._decided_to = self._next_end - self.hop
        keep_from = self._next_end - self.window - self._first
        if keep_from > 0:
            self._buffer = self._buffer[keep_from:]
            self._first += keep_from
        self.stats.units += len(units)
        return units

    def samples_needed(self) -> int | None:
        """Samples still to come before the next window completes; None until the stream has started."""
        if self._expected_us is None:
            return None
        return self._next_end - (self._first + self._buffer.shape[0])

    def _count_undecided(self, resumed_us: int, arrived: float) -> None:
        """A gap: the signal from the end of the last window cut to where the stream goes on (or to the last
        sample that came, for a device that restarted its clock) is never decided, nor is its machine watched.
        The span the device's clock skipped is taken as no longer than the time that passed meanwhile (and
        ``GAP_SLACK_S``: blocks of one read share one arrival): another device's clock says nothing of it."""
        arrived_to = self._first + self._buffer.shape[0]
        skipped_s = (int(round(resumed_us / self.period_us)) - arrived_to) / self.rate_hz
        self.stats.seconds_undecided += max(0, arrived_to - self._decided_to) / self.rate_hz + \
            min(max(0.0, skipped_s), max(0.0, arrived - self._arrived) + GAP_SLACK_S)

    def _reset(self, timestamp_us: int) -> None:
        self.stats.gaps += 1
        self.stats.samples_discarded += int(self._buffer.shape[0])
        self._buffer = np.zeros(0, dtype=np.float32)
        self._expected_us = None


class LineAssembler:
    """Tiles of ``tile_lines`` lines every ``tile_lines - overlap`` lines, cut into patches across the belt.

    Patches are ``patch_width`` pixels wide (the model's input), as many as fit the
    detector (``lanes``, when not given); pixels beyond the last whole patch are not
    inspected and are counted.  A tile's patches travel as one unit and are decided as
    one batch.  An encoder count that goes back starts a new ``encoder_epoch``: a device
    that restarted counts from 0 again, so a span counted before names no part on the belt
    any more, and a REJECT at it would fire at another part.

    An encoder count that jumps ahead means lines were lost (a corrupted frame, an
    unplugged link): the belt from the first line no tile holds up to the line that came
    is cut into unseen tiles (``Unit.seen`` False) for the fail-safe, as far back as the
    actuator, ``actuator_distance`` lines downstream.  Belt further back has passed it
    unchecked: it comes as one more unit (``Unit.passed``), so the log says which belt.
    """

    def __init__(self, tile_lines: int, overlap: int = 0, lanes: int | None = None, patch_width: int | None = None,
                 actuator_distance: int = 0):
        if not 0 <= overlap < tile_lines:
            raise ValueError("overlap must be in [0, tile_lines)")
        if lanes is None and patch_width is None:
            raise ValueError("give the number of lanes or the patch width")
        self.tile_lines, self.step, self.lanes, self.patch_width = tile_lines, tile_lines - overlap, lanes, patch_width
        self.actuator_distance = actuator_distance
        self.uninspected_pixels = 0
        self.stats = LineAssemblerStats()
        self._lines: list[np.ndarray] = []
        self._first: int | None = None      # encoder count of _lines[0]
        self._next_start: int | None = None
        self._last_encoder: int | None = None
        self._width = 0                     # pixels of the latest line
        self.encoder_epoch = 0

    def push(self, pixels: np.ndarray, encoder: int, timestamp_us: int, arrived: float) -> list[Unit]:
        if self._last_encoder is not None and encoder < self._last_encoder:
            self.encoder_epoch += 1
            self.stats.encoder_restarts += 1
        self._last_encoder = encoder
        width_changed = bool(self._lines) and pixels.shape[0] != self._lines[-1].shape[0]
        if (width_changed or not self._lines) and not self.fits(pixels.shape[0]):  # not for every line of a tile
            self.stats.lines_unusable += 1
            return []
        units = []
        if self._first is not None and (encoder != self._first + len(self._lines) or width_changed):
            # A gap in the encoder counts, or a detector that changed its width: no tile mixes either.
            self.stats.gaps += 1
            self.stats.samples_discarded += len(self._lines)
            if encoder > self._first + len(self._lines) and not width_changed:
                units = self._unseen(encoder, timestamp_us, arrived)
            self._lines, self._first = [], None
        if self._first is None:
            self._first, self._next_start = encoder, encoder
        self._lines.append(pixels)
        self._width = pixels.shape[0]
        while self._next_start + self.tile_lines <= self._first + len(self._lines):
            a = self._next_start - self._first
            tile = np.stack(self._lines[a:a + self.tile_lines]).astype(np.float32)
            lanes, width = self.geometry(tile.shape[1])
            self.uninspected_pixels = tile.shape[1] - lanes * width
            patches = tile[:, :lanes * width].reshape(self.tile_lines, lanes, width).transpose(1, 0, 2)
            units.append(Unit(np.ascontiguousarray(patches), self._next_start, self._next_start + self.tile_lines - 1,
                              timestamp_us, arrived, lanes, self.encoder_epoch))
            self._next_start += self.step
        drop = self._next_start - self._first
        if drop > 0:
            del self._lines[:drop]
            self._first += drop
        self.stats.units += len(units)
        return units

    @property
    def latest_encoder(self) -> int | None:
        """The encoder count of the latest line: where the scanner is on the belt; None before the first."""
        return self._last_encoder

    def start_afresh(self) -> None:
        """Another device on the port: its encoder count has nothing to do with the last one's, so its first
        line starts a new tile grid (no gap, no belt taken for lost) in a new encoder epoch (the last device's
        REJECTs name no part on this belt)."""
        self.stats.samples_discarded += len(self._lines)
        self._lines, self._first, self._last_encoder = [], None, None
        self.encoder_epoch += 1

    def _unseen(self, resumed_at: int, timestamp_us: int, arrived: float) -> list[Unit]:
        """Tiles of the belt no tile holds, from ``_next_start`` to the line before ``resumed_at`` (where the
        scanner is now), a tile's length each, every lane; only those whose last line has not yet reached the
        actuator.  Then the stretch before them, which has, as one unit (``passed``).  They carry the time the
        stream went on."""
        lanes, width = self.geometry(self._width)
        first, n = self._next_start, self.tile_lines
        reachable = resumed_at - self.actuator_distance  # a tile that ends before this line has passed the actuator
        skip = max(0, (reachable - first) // n) * n      # whole tiles that have, not counted one by one
        spans = [(start, min(start + n, resumed_at) - 1) for start in range(first + skip, resumed_at, n)]
        spans = [(start, end) for start, end in spans if end >= reachable]
        passed_to = spans[0][0] if spans else resumed_at  # the first line still upstream of the actuator
        self.stats.lines_unseen += resumed_at - first
        self.stats.lines_unseen_passed += passed_to - first
        self.stats.unseen_tiles += len(spans)
        units = [Unit(np.zeros((lanes, 0, width), np.float32), start, end, timestamp_us, arrived, lanes,
                      self.encoder_epoch, seen=False) for start, end in spans]
        if passed_to > first:
            self.stats.passed_spans += 1
            units.append(Unit(np.zeros((lanes, 0, width), np.float32), first, passed_to - 1, timestamp_us, arrived,
                              lanes, self.encoder_epoch, seen=False, passed=True))
        return units

    def samples_needed(self) -> int | None:
        """Lines still to come before the next tile completes; None until the stream has started."""
        if self._first is None:
            return None
        return self._next_start + self.tile_lines - (self._first + len(self._lines))

    def fits(self, pixels: int) -> bool:
        """Whether a line of ``pixels`` holds at least one whole patch."""
        try:
            return self.geometry(pixels)[1] >= 1
        except ValueError:
            return False

    def geometry(self, pixels: int) -> tuple[int, int]:
        """(lanes, patch width) for a detector line of ``pixels``."""
        if self.patch_width:
            lanes = self.lanes or pixels // self.patch_width
            if lanes < 1 or lanes * self.patch_width > pixels:
                raise ValueError(f"a line of {pixels} px cannot hold {lanes} patches of {self.patch_width} px")
            return lanes, self.patch_width
        return self.lanes, pixels // self.lanes
