"""The wire codec: round trips, shared vectors, sequence tracking, and a decoder that never raises."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from firmware_bridge.codec import MAX_ENCODED, FrameDecoder, crc32, encode_frame
from firmware_bridge.protocol import (MAX_PAYLOAD, Ack, Error, Heartbeat, Hello, Line, Nak, ProtocolError, Reject,
                                      RejectMode, SampleFormat, Samples, SensorKind)
from firmware_bridge.vectors import VECTORS_FILE, fuzz_inputs, valid_payloads, vector_messages


def roundtrip(message, seq=1, ts=2, enc=3):
    decoder = FrameDecoder()
    frames = decoder.feed(encode_frame(message, seq, ts, enc))
    assert len(frames) == 1 and decoder.stats.rejected == 0
    frame = frames[0]
    assert (frame.seq, frame.timestamp_us, frame.encoder) == (seq, ts, enc)
    return frame.message


u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=16),
       st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 65535)),
       st.sampled_from(SensorKind), st.sampled_from(SampleFormat), st.integers(1, 3), st.integers(1, 16),
       st.floats(1, 1e6, width=32), st.floats(2**-30, 1e3, width=32), st.integers(0, 65535))
def test_hello_roundtrip(device, fw, sensor, fmt, channels, depth, rate, scale, pixels):
    hello = Hello(device, fw, sensor, fmt, channels, depth, rate, scale, pixels)
    assert roundtrip(hello) == hello


@given(st.sampled_from([np.int16, np.int32]).flatmap(
    lambda dt: arrays(dt, st.tuples(st.integers(0, 300), st.integers(1, 3)))), st.floats(2**-30, 10, width=32), u32, u64)
def test_samples_roundtrip(data, scale, seq, ts):
    got = roundtrip(Samples(data, scale), seq, ts, 0)
    assert got.data.dtype == data.dtype and np.array_equal(got.data, data) and got.scale == scale


@given(st.integers(1, 16).flatmap(lambda depth: st.tuples(
    st.just(depth), arrays(np.uint8 if depth <= 8 else np.uint16, st.integers(0, 4096),
                           elements=st.integers(0, 2**depth - 1)))), u64)
def test_line_roundtrip(depth_pixels, encoder):
    depth, pixels = depth_pixels
    got = roundtrip(Line(pixels, depth), enc=encoder)
    assert got.bit_depth == depth and np.array_equal(got.pixels, pixels)


@given(u32, st.sampled_from(RejectMode), st.integers(0, 255), st.integers(0, 65535), u64)
def test_reject_roundtrip(decision, mode, lane, reason, at):
    reject = Reject(decision, mode, lane, reason, at)
    assert roundtrip(reject) == reject


@given(st.integers(0, 255), u32, st.integers(0, 255))
def test_ack_nak_heartbeat_error_roundtrip(kind, seq, code):
    assert roundtrip(Ack(kind, seq, code)) == Ack(kind, seq, code)
    assert roundtrip(Nak(kind, seq, code)) == Nak(kind, seq, code)
    assert roundtrip(Heartbeat(seq)) == Heartbeat(seq)
    assert roundtrip(Error(code, "overrun on axis Z")) == Error(code, "overrun on axis Z")


@pytest.mark.parametrize("message", [Samples(np.ones((120, 1), np.int16), float("nan")),
                                     Samples(np.ones((120, 1), np.int16), 0.0),
                                     Samples(np.ones((120, 1), np.int16), float("inf")),
                                     Hello("dev", (1, 0, 0), SensorKind.VIBRATION, SampleFormat.INT16, 1, 16,
                                           float("nan"), 1e-3, 0),
                                     Hello("dev", (1, 0, 0), SensorKind.VIBRATION, SampleFormat.INT16, 1, 16,
                                           12000.0, -1e-3, 0)])
def test_a_scale_or_rate_no_sensor_can_have_is_a_rejected_frame_not_windows_of_nan(message):
    """The CRC holds (the firmware sent it so): the decoder refuses the frame and counts it, as a corrupted one."""
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(message, 1, 2, 0)) == []
    assert decoder.stats.rejected == decoder.stats.bad_payload == 1


def test_shared_vectors_match_the_python_codec():
    rows = [line.split() for line in VECTORS_FILE.read_text().splitlines()]
    assert [r[0] for r in rows] == [v[0] for v in vector_messages()]
    for (name, message, seq, ts, enc), row in zip(vector_messages(), rows):
        assert row[6] == encode_frame(message, seq, ts, enc).hex(), name
        frames = FrameDecoder().feed(bytes.fromhex(row[6]))
        assert len(frames) == 1 and frames[0].message.pack() == message.pack(), name


def test_crc32c_vectors_of_the_spec():
    assert crc32(b"123456789") == 0xE3069283
    assert crc32(b"") == 0
    assert crc32(bytes(32)) == 0x8A9136AA
    assert crc32(b"\xff" * 32) == 0x62A8AB43


def test_any_chunking_gives_the_same_frames():
    stream = b"".join(encode_frame(m, s, t, e) for _, m, s, t, e in vector_messages())
    whole = FrameDecoder().feed(stream)
    decoder = FrameDecoder()
    bytewise = [f for i in range(len(stream)) for f in decoder.feed(stream[i:i + 1])]
    assert [f.message.pack() for f in bytewise] == [f.message.pack() for f in whole]
    assert len(whole) == len(vector_messages())


def test_sequence_gaps_wraparound_and_duplicates_are_counted():
    decoder = FrameDecoder()
    for seq in (2**32 - 2, 2**32 - 1, 0, 1, 5, 5, 6, 3):
        decoder.feed(encode_frame(Heartbeat(0), seq))
    stats = decoder.stats
    assert (stats.frames, stats.seq_gaps, stats.lost_frames, stats.duplicates) == (8, 1, 3, 2)


def test_a_device_that_restarts_on_an_open_link_numbers_anew_and_its_losses_are_still_counted():
    """A restart on a UART (power-up, watchdog) numbers from 0 again without the port closing.  Every later
    frame used to count as a duplicate, and frames lost after it went uncounted until the numbers caught up."""
    hello = Hello("dev", (1, 0, 0), SensorKind.VIBRATION, SampleFormat.INT16, 1, 16, 12000.0, 1e-3)
    announced = FrameDecoder()
    for seq, message in [(s, Heartbeat(0)) for s in range(1000, 1010)] + [(0, hello), (1, Heartbeat(0)),
                                                                           (4, Heartbeat(0)), (5, Heartbeat(0))]:
        announced.feed(encode_frame(message, seq))
    stats = announced.stats
    assert (stats.frames, stats.device_restarts, stats.duplicates, stats.lost_frames) == (14, 1, 0, 2)
    unannounced = FrameDecoder()  # its HELLO lost to corruption: three frames in a row on from each other tell
    for seq in [*range(1000, 1010), 1, 2, 3, 7, 8]:
        unannounced.feed(encode_frame(Heartbeat(0), seq))
    stats = unannounced.stats
    assert (stats.frames, stats.device_restarts, stats.duplicates, stats.lost_frames) == (15, 1, 0, 3)
    replayed = FrameDecoder()  # two old frames again are duplicates, not a restart
    for seq in (10, 11, 12, 5, 6, 13):
        replayed.feed(encode_frame(Heartbeat(0), seq))
    stats = replayed.stats
    assert (stats.device_restarts, stats.duplicates, stats.lost_frames) == (0, 2, 0)


def test_garbage_and_oversize_runs_resynchronise():
    decoder = FrameDecoder()
    good = encode_frame(Heartbeat(7), 1)
    frames = decoder.feed(b"\x13\x37 noise" + good + bytes([0x55]) * (MAX_ENCODED + 10) + good)
    assert len(frames) == 2  # the oversize run ends at the next frame's leading delimiter
    assert decoder.stats.oversize == 1 and decoder.stats.garbage_bytes > MAX_ENCODED


def test_oversize_payload_is_refused_at_encoding():
    with pytest.raises(ProtocolError, match="exceeds"):
        encode_frame(Line(np.zeros(MAX_PAYLOAD, np.uint16), 12), 0)


def test_fuzz_1e5_random_and_mutated_inputs_never_raise_or_pass_a_corrupted_frame():
    valid = valid_payloads()
    decoder = FrameDecoder()
    for data in fuzz_inputs(100_000, np.random.default_rng(20261122)):
        for frame in decoder.feed(data):
            assert frame.message.pack() in valid  # a frame only passes if it is bit-exact
    assert decoder.stats.rejected > 40_000 and decoder.stats.bytes_in > 1_000_000
