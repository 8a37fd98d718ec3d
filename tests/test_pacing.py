"""The reader's pacing: sleep until shortly before a window can complete, never hide latency."""

from __future__ import annotations

import numpy as np
import pytest

from edge.runtime.assembler import VibrationAssembler
from edge.runtime.pacing import MAX_SLEEP_S, MIN_SLEEP_S, ReadPacer


def stream(pacer: ReadPacer, blocks: int, block: int, rate: float, t0: float = 0.0) -> float:
    """Feed ``blocks`` blocks of ``block`` samples arriving at ``rate`` samples/s; returns the last time."""
    t = t0
    for _ in range(blocks):
        t += block / rate
        pacer.received(t, block)
    return t


def test_sleeps_until_one_block_before_the_window_completes():
    pacer = ReadPacer(12000.0)
    t = stream(pacer, 20, 120, 12000.0)
    assert pacer.pause(t, 1024) == pytest.approx((1024 - 120) / 12000.0)
    assert pacer.pause(t, 120 + 12) == 0.0            # a 1 ms sleep is not worth it
    wider = ReadPacer(12000.0, margin_blocks=2.0)
    assert wider.pause(stream(wider, 20, 120, 12000.0), 1024) == pytest.approx((1024 - 240) / 12000.0)
    assert pacer.pause(t, None) == 0.0                 # stream not started: block on the port
    assert pacer.pause(t, 10 ** 6) == MAX_SLEEP_S


def test_a_faster_stream_shortens_the_sleep():
    pacer = ReadPacer(12000.0)
    t = stream(pacer, 200, 120, 24000.0)               # the device runs at twice its nominal rate
    assert pacer.rate() == pytest.approx(24000.0, rel=0.02)
    assert pacer.pause(t, 1024) == pytest.approx((1024 - 120) / 24000.0, rel=0.02)


def test_an_overrun_stops_pacing_for_a_while():
    pacer = ReadPacer(12000.0, backoff_s=5.0)
    t = stream(pacer, 20, 120, 12000.0)
    pacer.overrun(t)
    assert pacer.overruns == 1 and pacer.pause(t + 4.9, 1024) == 0.0
    assert pacer.pause(t + 5.1, 1024) > MIN_SLEEP_S


def test_a_wake_up_later_than_the_margin_is_counted_as_a_host_stall():
    pacer = ReadPacer(12000.0)                         # margin: one block of 120 samples, 10 ms
    pacer.woke(0.05, 0.07)                             # no block seen yet: nothing to judge against
    stream(pacer, 20, 120, 12000.0)
    pacer.woke(0.05, 0.059)                            # 9 ms late: the last frame cannot be in yet
    assert pacer.late_wakeups == 0
    pacer.woke(0.05, 0.061)                            # 11 ms late: it may be
    assert pacer.late_wakeups == 1
    faster = ReadPacer(12000.0)
    stream(faster, 200, 120, 24000.0)                  # twice the nominal rate: a 5 ms margin
    faster.woke(0.05, 0.056)                           # 6 ms late: past the margin the sleep was given
    assert faster.late_wakeups == 1


def test_no_block_seen_no_sleep_and_rate_must_be_positive():
    assert ReadPacer(12000.0).pause(0.0, 1024) == 0.0
    with pytest.raises(ValueError, match="positive"):
        ReadPacer(0.0)


def test_samples_needed_follows_the_assembler():
    asm = VibrationAssembler(window=2048, hop=1024)
    assert asm.samples_needed() is None
    block = np.zeros((120, 1), np.int16)
    asm.push(block, 1.0, 0, 0.0)
    assert asm.samples_needed() == 2048 - 120
    for k in range(1, 18):                             # 2,160 samples: the first window is out
        asm.push(block, 1.0, int(round(k * 120 / 12000 * 1e6)), 0.0)
    assert asm.stats.units == 1 and asm.samples_needed() == 2048 + 1024 - 18 * 120
