"""The reader's pacing: sleep until shortly before a window can complete, never hide latency."""

from __future__ import annotations

import numpy as np
import pytest

from edge.runtime.assembler import LineAssembler, VibrationAssembler
from edge.runtime.pacing import (LINE_MARGIN_S, LINE_MAX_BUFFERED_BYTES, LINE_MIN_SLEEP_S, MAX_SLEEP_S, MIN_SLEEP_S,
                                 DeviceClock, ReadPacer, line_pacer)


def stream(pacer: ReadPacer, blocks: int, block: int, rate: float, t0: float = 0.0,
           stamped: bool = False, delay: float = 0.001) -> float:
    """Feed ``blocks`` blocks of ``block`` samples arriving at ``rate`` samples/s; returns the last time.

    ``stamped``: each block carries the device timestamp of its first sample, at the nominal
    rate, and arrives ``delay`` after it.
    """
    t = t0
    for k in range(blocks):
        t += block / rate
        device_us = int(round((t0 + k * block / pacer.rate_hz) * 1e6)) if stamped else None
        pacer.received(t + (delay if stamped else 0.0), block, device_us)
    return t + (delay if stamped else 0.0)


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
    for stamped in (False, True):                      # its timestamps say the nominal rate: the arrivals win
        pacer = ReadPacer(12000.0)
        t = stream(pacer, 200, 120, 24000.0, stamped=stamped)  # the device runs at twice its nominal rate
        assert pacer.rate() == pytest.approx(24000.0, rel=0.02)
        assert pacer.pause(t, 1024) == pytest.approx((1024 - 120) / 24000.0, rel=0.02)


def test_a_late_frame_does_not_push_the_plan_past_the_device_schedule():
    """A frame held back 25 ms is followed by the rest on time: wake for them, 25 ms sooner."""
    pacer = ReadPacer(12000.0)
    t = stream(pacer, 20, 120, 12000.0, stamped=True)  # on time: 1 ms after each timestamp
    assert pacer.pause(t, 1024) == pytest.approx((1024 - 120) / 12000.0)
    late = t + 0.01 + 0.025                            # the next frame, 25 ms behind its schedule
    pacer.received(late, 120, int(round(20 * 0.01 * 1e6)))
    assert pacer.pause(late, 1024 - 120) == pytest.approx((1024 - 240) / 12000.0 - 0.025, abs=1e-6)
    unstamped = ReadPacer(12000.0)                     # arrivals alone would sleep the full time
    stream(unstamped, 20, 120, 12000.0)
    unstamped.received(late, 120)
    assert unstamped.pause(late, 1024 - 120) == pytest.approx((1024 - 240) / 12000.0)


def test_the_device_clock_learns_from_exact_arrivals_only():
    clock = DeviceClock(window_s=1.0)
    clock.observe(10.002, 0)
    assert clock.host_time_after(0.01) is None         # one frame: no clock yet
    clock.observe(10.011, 10_000)                      # the quickest: 1 ms on the way
    clock.observe(10.020, 20_000, exact=False)         # read after a sleep: stamped too early, ignored
    assert clock.host_time_after(0.01) == pytest.approx(10.031)
    clock.observe(11.5, 1_490_000)                     # the 1 ms offset is 1.5 s old now: it ages out,
    clock.observe(11.513, 1_510_000)                   # and the quickest recent frame took 3 ms
    assert clock.host_time_after(0.0) == pytest.approx(11.513)
    clock.observe(12.0, 5_000)                         # the device restarted its clock: start over
    assert clock.host_time_after(0.0) is None
    clock.observe(12.01, 15_000)
    assert clock.host_time_after(0.0) == pytest.approx(12.01)


def test_timestamps_that_do_not_advance_are_not_a_clock():
    pacer = ReadPacer(12000.0)
    t = 0.0
    for _ in range(20):                                # a device that stamps every frame 0
        t += 0.01
        pacer.received(t, 120, 0)
    assert pacer.clock.host_time_after(0.0) is None
    assert pacer.pause(t, 1024) == pytest.approx((1024 - 120) / 12000.0)


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


def test_a_line_scan_reader_wakes_a_few_milliseconds_before_the_tile_s_last_line():
    """One line is 0.8 ms at 1,250 lines/s: the margin is time, not one frame, and it grows with the rate."""
    pacer = line_pacer(1250.0, 100)                    # short lines: the margin, not the kernel, bounds the sleep
    t = stream(pacer, 100, 1, 1250.0)
    margin = LINE_MARGIN_S * 1250.0                    # 5 lines
    assert pacer.pause(t, 32) == pytest.approx((32 - margin) / 1250.0)
    assert pacer.pause(t, 6) == 0.0                    # one line, 0.8 ms: not worth a sleep
    assert (6 - margin) / 1250.0 < LINE_MIN_SLEEP_S < (7 - margin) / 1250.0 and pacer.pause(t, 7) > 0
    pacer.woke(0.02, 0.02 + 0.9 * LINE_MARGIN_S)       # within the margin: the tile's last line is not in yet
    assert pacer.late_wakeups == 0
    pacer.woke(0.02, 0.02 + 1.1 * LINE_MARGIN_S)
    assert pacer.late_wakeups == 1


def test_a_line_scan_sleep_leaves_little_in_the_kernel_and_a_backlog_pauses_pacing():
    """A pty holds 18 kB; a device that cannot write waits, and its lines would then come at the reader's pace."""
    pacer = line_pacer(1250.0, 1320)                   # 640 16-bit pixels a line: 4 lines fill the budget
    t = stream(pacer, 100, 1, 1250.0)
    assert pacer.max_ahead == LINE_MAX_BUFFERED_BYTES // 1320 == 4
    assert pacer.pause(t, 32) == pytest.approx(4 / 1250.0)   # not the 27 lines up to the margin
    assert pacer.pause(t, 9) == pytest.approx(4 / 1250.0)  # 5 lines of margin
    faster = line_pacer(1250.0, 1320)
    t = stream(faster, 400, 1, 2500.0)                 # a belt twice as fast: as many lines, half the sleep
    assert faster.pause(t, 32) == pytest.approx(4 / 2500.0, rel=0.02)
    pacer.woke_to(t, 2 * LINE_MAX_BUFFERED_BYTES)      # as planned, with room for a late wake-up
    assert pacer.backlogs == 0 and pacer.pause(t, 32) > 0
    pacer.woke_to(t, 2 * LINE_MAX_BUFFERED_BYTES + 1)  # more: the device may have waited; stop sleeping a while
    assert pacer.backlogs == 1 and pacer.pause(t + 4.9, 32) == 0.0 and pacer.pause(t + 5.1, 32) > 0
    assert ReadPacer(12000.0).max_backlog is None       # vibration: 100 ms of samples is a few kB


def test_lines_needed_follows_the_line_assembler():
    asm = LineAssembler(tile_lines=32, overlap=8, lanes=2)
    assert asm.samples_needed() is None
    line = np.zeros(64, np.uint16)
    for encoder in range(10):
        asm.push(line, encoder, encoder * 800, 0.0)
    assert asm.samples_needed() == 22
    for encoder in range(10, 32):
        asm.push(line, encoder, encoder * 800, 0.0)
    assert asm.stats.units == 1 and asm.samples_needed() == 24   # the next tile starts 8 lines back
