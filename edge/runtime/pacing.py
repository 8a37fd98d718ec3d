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
"""

from __future__ import annotations

from collections import deque

#: Longest sleep.  The kernel's tty buffers hold far more than this at any sensor rate
#: the protocol carries, so sleeping never costs a byte.
MAX_SLEEP_S = 0.1
#: Shorter pauses save a wake-up or two at most: not worth the risk of an overrun.
MIN_SLEEP_S = 0.02


class ReadPacer:
    """How long the reader may sleep before the next window can complete.

    ``margin_blocks`` frames' worth of samples are left to arrive while the reader
    blocks on the port (so their arrival is stamped exactly); ``backoff_s`` is how
    long pacing stays off after an overrun.  One frame of margin means the reader wakes
    at least one frame period (10 ms) before the window's last frame: far more than a
    sleep overshoots on an idle core, and one wake-up per window fewer than two frames
    (about a quarter of the reader's CPU at the real rate).
    """

    def __init__(self, rate_hz: float, margin_blocks: float = 1.0, backoff_s: float = 5.0):
        if rate_hz <= 0:
            raise ValueError("the sample rate must be positive")
        self.rate_hz, self.margin_blocks, self.backoff_s = rate_hz, margin_blocks, backoff_s
        self.overruns = 0
        self.late_wakeups = 0  # sleeps that ended later than the margin allows: the host stalled the reader
        self._block = 0                               # samples in the last block
        self._history: deque[tuple[float, int]] = deque()  # (time, samples received so far)
        self._received = 0
        self._off_until = 0.0

    def received(self, now: float, samples: int) -> None:
        """``samples`` arrived at ``now`` (one block or several)."""
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
        seconds = (samples_needed - self.margin_blocks * self._block) / self.rate()
        return min(seconds, MAX_SLEEP_S) if seconds >= MIN_SLEEP_S else 0.0

    def woke(self, planned_s: float, slept_s: float) -> None:
        """A sleep of ``planned_s`` lasted ``slept_s``: count it if it overshot by more than the margin.

        The margin is the one ``pause`` granted: margin blocks at the rate it planned with
        (nothing arrives while the reader sleeps, so that rate has not changed since).

        Such a wake-up can find a window's last frame already waiting, which then counts as
        an overrun with its latency stamped from the start of the sleep.  Late wake-ups tell
        an overrun the host caused (a stalled core) from one the stream caused (data early).
        """
        if self._block and slept_s - planned_s > self.margin_blocks * self._block / self.rate():
            self.late_wakeups += 1

    def overrun(self, now: float) -> None:
        """A window completed from data that arrived while the reader slept: stop pacing for a while."""
        self.overruns += 1
        self._off_until = now + self.backoff_s
