"""When the reader may sleep instead of waking for every frame.

A vibration window completes every hop (85 ms for 1,024 samples at 12 kHz), but the
firmware sends a frame every 10 ms.  Waking for each frame costs far more than the
frame's work: on a core that has been idle for 10 ms, decoding and assembling one
frame takes about ten times its back-to-back CPU time (cold caches, a CPU coming out
of idle).  So the reader sleeps until shortly before the next window can complete,
takes what arrived meanwhile in one pass, then blocks on the port as usual, so the
last frame of each window is still stamped when it arrives.

Pacing never hides latency.  Data that is already waiting when the reader wakes is
stamped with the time the sleep began, which overstates its latency, never
understates it.  If such data completes a window (the stream ran faster than
expected), the overrun is counted and pacing pauses for a while.  Overload is handled
too: the expected rate is the faster of the nominal rate and the rate measured over
the last second.

A line-scan detector sends a line every 0.8 ms, and a tile completes every few tens of
lines: the same holds, with two differences.  The margin is a few milliseconds rather
than one frame, and a sleep is short enough that the lines arriving during it fit in
the kernel's buffer, since a sleep that filled it would stall the device (see
:func:`line_pacer`).

A frame that arrives late (a busy device or USB link holds it back) is usually
followed by the ones behind it in a burst, on the device's schedule.  Planning from
that late arrival would sleep through the burst.  So the pacer also plans from the
device's own frame timestamps, mapped to the host clock by the smallest delay seen
lately (:class:`DeviceClock`), and sleeps until the earlier of the two plans.
"""

from __future__ import annotations

from collections import deque

#: Longest sleep.  The kernel's tty buffers hold far more than this at any sensor rate
#: the protocol carries, so sleeping never costs a byte.
MAX_SLEEP_S = 0.1
#: Shorter pauses save a wake-up or two at most: not worth the risk of an overrun.
MIN_SLEEP_S = 0.02
#: How far back the device clock's offset is taken from: long enough to hold frames that
#: arrived on time, short enough to follow the drift between two crystals (100 ppm is
#: 1 ms in 10 s).
CLOCK_WINDOW_S = 10.0


class DeviceClock:
    """Where a device timestamp falls on the host clock: the device time plus the smallest
    offset (arrival minus timestamp) seen in the last ``window_s`` seconds.

    The smallest offset is the frame that waited least on its way, so a frame is never
    expected later than the quickest of its recent predecessors would have arrived.
    Timestamps that do not advance (a restarted device, one that does not stamp its frames)
    start the estimate over; until two frames have advanced it, there is none.
    """

    def __init__(self, window_s: float = CLOCK_WINDOW_S):
        self.window_s = window_s
        self._offsets: deque[tuple[float, float]] = deque()  # (arrival, offset), offsets increasing
        self._last_us: int | None = None
        self._advanced = False  # a later timestamp seen since the estimate started

    def observe(self, arrived: float, device_us: int, exact: bool = True) -> None:
        """A frame stamped ``device_us`` arrived at ``arrived`` (host seconds).

        Only an ``exact`` arrival (stamped as the frame came in, not after a sleep) says
        anything about the offset; any frame moves the clock on.
        """
        if self._last_us is not None and device_us <= self._last_us:
            self._offsets.clear()
            self._advanced = False
        elif self._last_us is not None:
            self._advanced = True
        self._last_us = device_us
        if not exact:
            return
        offset = arrived - device_us / 1e6
        while self._offsets and self._offsets[-1][1] >= offset:  # a monotonic deque: the front is the minimum
            self._offsets.pop()
        self._offsets.append((arrived, offset))
        while arrived - self._offsets[0][0] > self.window_s:
            self._offsets.popleft()

    def host_time_after(self, device_s: float) -> float | None:
        """The host time ``device_s`` seconds (device clock) after the latest frame's timestamp,
        or None without an estimate."""
        if not self._advanced or not self._offsets:
            return None
        return self._last_us / 1e6 + device_s + self._offsets[0][1]


class ReadPacer:
    """How long the reader may sleep before the next window can complete.

    ``margin_blocks`` frames' worth of samples are left to arrive while the reader
    blocks on the port (so their arrival is stamped exactly); ``backoff_s`` is how
    long pacing stays off after an overrun.  One frame of margin means the reader wakes
    at least one frame period (10 ms) before the window's last frame: far more than a
    sleep overshoots on an idle core, and one wake-up per window fewer than two frames
    (about a quarter of the reader's CPU at the real rate).
    """

    def __init__(self, rate_hz: float, margin_blocks: float = 1.0, backoff_s: float = 5.0, margin_s: float = 0.0,
                 min_sleep_s: float = MIN_SLEEP_S, max_ahead: float | None = None, max_backlog: int | None = None):
        """``margin_s``: a margin in time, where one block is too short; ``max_ahead``: the most samples one
        sleep may leave waiting in the kernel (None: ``MAX_SLEEP_S`` bounds it); ``max_backlog``: bytes found
        waiting after a sleep beyond which pacing pauses (see :meth:`woke_to`)."""
        if rate_hz <= 0:
            raise ValueError("the sample rate must be positive")
        self.rate_hz, self.margin_blocks, self.backoff_s = rate_hz, margin_blocks, backoff_s
        self.margin_s, self.min_sleep_s = margin_s, min_sleep_s
        self.max_ahead, self.max_backlog = max_ahead, max_backlog
        self.overruns = 0
        self.backlogs = 0      # sleeps that left more than ``max_backlog`` bytes waiting
        self.late_wakeups = 0  # sleeps that ended later than the margin allows: the host stalled the reader
        self._block = 0                               # samples in the last block
        self._history: deque[tuple[float, int]] = deque()  # (time, samples received so far)
        self._received = 0
        self._off_until = 0.0
        self.clock = DeviceClock()

    def received(self, now: float, samples: int, device_us: int | None = None, exact: bool = True) -> None:
        """``samples`` arrived at ``now`` (one block or several); ``device_us`` is the block's timestamp,
        ``exact`` False when ``now`` is the start of a sleep rather than the arrival."""
        if device_us is not None:
            self.clock.observe(now, device_us, exact)
        self._received += samples
        self._block = samples if samples else self._block
        self._history.append((now, self._received))
        while len(self._history) > 2 and now - self._history[1][0] >= 1.0:
            self._history.popleft()

    def rate(self) -> float:
        """Samples per second to plan with: the nominal rate, or the measured one when faster."""
        if len(self._history) < 2:
            return self.rate_hz
        (t0, n0), (t1, n1) = self._history[0], self._history[-1]
        measured = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        return max(self.rate_hz, measured)

    def pause(self, now: float, samples_needed: int | None) -> float:
        """Seconds to sleep before reading again; 0 to read (and block) at once."""
        if samples_needed is None or now < self._off_until or not self._block:
            return 0.0
        rate = self.rate()
        ahead = samples_needed - self._margin(rate)
        if self.max_ahead is not None:
            ahead = min(ahead, self.max_ahead)
        seconds = ahead / rate
        wake = self.clock.host_time_after(ahead / self.rate_hz)
        if wake is not None:  # the device's schedule, in case the last frame came late
            seconds = min(seconds, wake - now)
        return min(seconds, MAX_SLEEP_S) if seconds >= self.min_sleep_s else 0.0

    def _margin(self, rate: float) -> float:
        """Samples left to arrive while the reader blocks: ``margin_blocks`` blocks, or ``margin_s`` at ``rate``."""
        return max(self.margin_blocks * self._block, self.margin_s * rate)

    def woke(self, planned_s: float, slept_s: float) -> None:
        """A sleep of ``planned_s`` lasted ``slept_s``: count it if it overshot by more than the margin.

        The margin is the one ``pause`` granted: margin blocks at the rate it planned with
        (nothing arrives while the reader sleeps, so that rate has not changed since).

        Such a wake-up can find a window's last frame already waiting, which then counts as
        an overrun with its latency stamped from the start of the sleep.  Late wake-ups tell
        an overrun the host caused (a stalled core) from one the stream caused (data early).
        """
        if self._block:
            rate = self.rate()
            if slept_s - planned_s > self._margin(rate) / rate:
                self.late_wakeups += 1

    def woke_to(self, now: float, waiting_bytes: int) -> None:
        """``waiting_bytes`` had piled up in the kernel when a sleep ended: too many, and pacing pauses.

        Its buffer is small (a pty holds 18 kB), and once it is full the device waits to write.
        Its frames then come at the pace the reader takes them, which the measured rate would
        take for the stream's rate, and the next sleep would be as long: the device would be
        held back for good.
        """
        if self.max_backlog is not None and waiting_bytes > self.max_backlog:
            self.backlogs += 1
            self._off_until = now + self.backoff_s

    def overrun(self, now: float) -> None:
        """A window completed from data that arrived while the reader slept: stop pacing for a while."""
        self.overruns += 1
        self._off_until = now + self.backoff_s


#: A line-scan reader wakes this long before a tile's last line is due.  A line comes every
#: 0.8 ms at 1,250 lines/s, far too short a margin for a sleep that overshoots by a
#: millisecond or two on a busy gateway.
LINE_MARGIN_S = 0.004
#: A line-scan sleep is worth it from about two lines on: each line is a wake-up saved.
LINE_MIN_SLEEP_S = 0.001
#: The most bytes a line-scan sleep plans to leave waiting in the kernel (four lines of
#: 640 16-bit pixels).  A line is 1.3 kB, 1.6 MB/s at 1,250 lines/s, and a pty holds
#: about 18 kB before its writer blocks; a USB serial device whose host stops reading
#: keeps the data itself, in a buffer the runtime knows nothing of.  So a sleep leaves
#: room for a belt twice as fast as planned and for a sleep that overshoots, and twice
#: this found waiting pauses pacing: the device must never wait on the gateway.
LINE_MAX_BUFFERED_BYTES = 6_000


def line_pacer(lines_per_s: float, line_bytes: int, before: ReadPacer | None = None) -> ReadPacer:
    """The pacer for a line-scan stream of ``lines_per_s`` (the device's HELLO) in frames of ``line_bytes``:
    it sleeps a few milliseconds at a time and reads the lines that came meanwhile in one pass.

    ``before``: the pacer of the stream this one replaces (a device back at another line rate
    or width); its counts go on in the new one.
    """
    pacer = ReadPacer(lines_per_s, margin_s=LINE_MARGIN_S, min_sleep_s=LINE_MIN_SLEEP_S,
                      max_ahead=max(1, LINE_MAX_BUFFERED_BYTES // line_bytes), max_backlog=2 * LINE_MAX_BUFFERED_BYTES)
    if before is not None:
        pacer.overruns, pacer.backlogs, pacer.late_wakeups = before.overruns, before.backlogs, before.late_wakeups
    return pacer
