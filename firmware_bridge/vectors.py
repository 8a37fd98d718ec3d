"""Shared test vectors: the same frames checked against the Python codec and the C reference framer.

``python -m firmware_bridge.vectors`` rewrites ``firmware/test_vectors.txt``; each line is
``name type seq timestamp_us encoder payload_hex wire_hex`` (``-`` for an empty payload).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from firmware_bridge.codec import encode_frame
from firmware_bridge.protocol import (Ack, Error, Heartbeat, Hello, Line, Message, Nak, NakReason, Reject,
                                      RejectMode, SampleFormat, Samples, SensorKind)

VECTORS_FILE = Path(__file__).with_name("firmware") / "test_vectors.txt"


def vector_messages() -> list[tuple[str, Message, int, int, int]]:
    """(name, message, seq, timestamp_us, encoder) for every message type and the COBS edge cases."""
    ramp = np.arange(-600, 600, 7, dtype=np.int16)[:120]
    return [
        ("hello_request", Hello(request=True), 0, 0, 0),
        ("hello_vibration", Hello("acc-0042", (1, 4, 2), SensorKind.VIBRATION, SampleFormat.INT16, 3, 16,
                                  12000.0, 0.000488), 1, 1_000, 0),
        ("hello_linescan", Hello("xr-line-7", (2, 0, 11), SensorKind.LINESCAN, SampleFormat.UINT16, 1, 12,
                                 1250.0, 1.0, 1024), 1, 1_000, 0),
        ("samples_int16_1ch", Samples(ramp[:, None], 0.000488), 2, 10_000, 0),
        ("samples_int16_3ch", Samples(np.stack([ramp, -ramp, ramp // 2], axis=1)[:40], 0.000488), 3, 20_000, 0),
        ("samples_int32_2ch", Samples(np.array([[1 << 20, -(1 << 20)], [0, 255]], dtype=np.int32), 1e-6),
         4, 30_000, 0),
        ("line_12bit_1024px", Line((np.arange(1024) * 4 % 4096).astype(np.uint16), 12), 5, 40_000, 123_456),
        ("line_8bit_640px", Line((np.arange(640) % 256).astype(np.uint8), 8), 6, 40_800, 123_457),
        ("line_zeros_300px", Line(np.zeros(300, np.uint8), 8), 7, 41_600, 123_458),
        ("line_nonzero_254", Line(np.full(254, 7, np.uint8), 8), 8, 42_400, 123_459),
        ("reject_at_encoder", Reject(9001, RejectMode.AT_ENCODER, 3, 2, 124_000), 10, 50_000, 123_460),
        ("reject_after_us", Reject(9002, RejectMode.AFTER_US, 0, 1, 15_000), 11, 50_100, 0),
        ("ack", Ack(0x10, 10), 12, 50_200, 0),
        ("nak", Nak(0x02, 4, int(NakReason.BAD_PAYLOAD)), 13, 50_300, 0),
        ("heartbeat", Heartbeat(0), 0xFFFFFFFF, 2**40, 2**33),
        ("error", Error(17, "accelerometer FIFO overrun"), 14, 60_000, 0),
    ]


def fuzz_inputs(count: int, rng: np.random.Generator, max_random: int = 64, max_flips: int = 3):
    """Hostile decoder input: alternately random bytes and vector frames with 1..max_flips bit flips."""
    originals = [encode_frame(m, s, t, e) for _, m, s, t, e in vector_messages()]
    for i in range(count):
        if i % 2:
            yield rng.integers(0, 256, int(rng.integers(0, max_random)), dtype=np.uint8).tobytes()
        else:
            frame = bytearray(originals[i % len(originals)])
            for pos in rng.integers(0, len(frame), int(rng.integers(1, max_flips + 1))):
                frame[pos] ^= 1 << int(rng.integers(0, 8))
            yield bytes(frame)


def valid_payloads() -> set[bytes]:
    """The payloads of the vector frames: the only ones a fuzzed stream may deliver."""
    return {m.pack() for _, m, _, _, _ in vector_messages()}


def write_vectors(path: Path = VECTORS_FILE) -> None:
    lines = []
    for name, message, seq, ts, enc in vector_messages():
        payload = message.pack().hex() or "-"
        wire = encode_frame(message, seq, ts, enc).hex()
        lines.append(f"{name} {int(message.TYPE)} {seq} {ts} {enc} {payload} {wire}")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    write_vectors(Path(sys.argv[1]) if len(sys.argv) > 1 else VECTORS_FILE)
