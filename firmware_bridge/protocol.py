"""drsn-edge wire protocol, version 1: message types, the frame header and every payload.

A frame on the wire is ``COBS(header | payload | crc32c) 0x00``; see docs/protocol.md.
All integers are little-endian.  This module only packs and unpacks bytes; framing and
the streaming decoder live in :mod:`firmware_bridge.codec`.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

import numpy as np

PROTOCOL_VERSION = 1

#: version u8, type u8, payload length u16, sequence u32, device time in us u64, encoder count u64
HEADER = struct.Struct("<BBHIQQ")
CRC = struct.Struct("<I")
#: Largest payload a frame may carry (a 4096-px 16-bit line plus its 4-byte line header fits).
MAX_PAYLOAD = 8196
MAX_FRAME = HEADER.size + MAX_PAYLOAD + CRC.size


class MessageType(IntEnum):
    HELLO = 0x01
    SAMPLES = 0x02
    LINE = 0x03
    REJECT = 0x10
    ACK = 0x20
    NAK = 0x21
    HEARTBEAT = 0x30
    ERROR = 0x7F


class SensorKind(IntEnum):
    VIBRATION = 1
    LINESCAN = 2


class SampleFormat(IntEnum):
    INT16 = 1
    INT32 = 2
    UINT8 = 3
    UINT16 = 4


SAMPLE_DTYPES: dict[SampleFormat, np.dtype] = {
    SampleFormat.INT16: np.dtype("<i2"), SampleFormat.INT32: np.dtype("<i4"),
    SampleFormat.UINT8: np.dtype("u1"), SampleFormat.UINT16: np.dtype("<u2"),
}

#: The formats a SAMPLES block may carry, by wire code (a dict lookup: this runs for every frame).
_SAMPLES_DTYPES: dict[int, np.dtype] = {int(f): SAMPLE_DTYPES[f] for f in (SampleFormat.INT16, SampleFormat.INT32)}


class RejectMode(IntEnum):
    AT_ENCODER = 1   # fire when the encoder count reaches ``at``
    AFTER_US = 2     # fire ``at`` microseconds after the frame arrives


class NakReason(IntEnum):
    BAD_FRAME = 1
    UNSUPPORTED = 2
    BUSY = 3
    BAD_PAYLOAD = 4
    TOO_LATE = 5


class ProtocolError(ValueError):
    """A payload that does not match its message type (the decoder counts these, never raises)."""


@dataclass
class Message:
    """Base of every message; ``TYPE`` is the wire type."""

    TYPE: ClassVar[MessageType]

    def pack(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def unpack(cls, payload: bytes) -> "Message":
        raise NotImplementedError


def _fixed(layout: struct.Struct, payload: bytes, name: str) -> tuple:
    if len(payload) != layout.size:
        raise ProtocolError(f"{name} payload must be {layout.size} bytes, got {len(payload)}")
    return layout.unpack(payload)


@dataclass
class Hello(Message):
    """Device identity and stream description; an empty HELLO from the gateway asks for it."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<16sBBHBBBBffHH")
    device_id: str = ""
    firmware: tuple[int, int, int] = (0, 0, 0)
    sensor: SensorKind = SensorKind.VIBRATION
    sample_format: SampleFormat = SampleFormat.INT16
    channels: int = 1
    bit_depth: int = 16
    rate_hz: float = 0.0          # samples/s per channel, or lines/s
    scale: float = 1.0            # physical units per LSB (g for accelerometers)
    pixels: int = 0               # line width, line-scan only
    request: bool = False         # True: the gateway's empty HELLO asking the device to identify

    def pack(self) -> bytes:
        if self.request:
            return b""
        return self.LAYOUT.pack(self.device_id.encode()[:16], *self.firmware, int(self.sensor),
                                int(self.sample_format), self.channels, self.bit_depth, self.rate_hz,
                                self.scale, self.pixels, 0)

    @classmethod
    def unpack(cls, payload: bytes) -> "Hello":
        if not payload:
            return cls(request=True)
        dev, fw0, fw1, fw2, sensor, fmt, ch, depth, rate, scale, pixels, _ = _fixed(cls.LAYOUT, payload, "HELLO")
        if not (math.isfinite(rate) and rate >= 0 and _usable_scale(scale)):
            raise ProtocolError(f"HELLO: rate {rate} and scale {scale} must be finite, the scale above 0")
        try:
            return cls(dev.rstrip(b"\0").decode("ascii"), (fw0, fw1, fw2), SensorKind(sensor), SampleFormat(fmt),
                       ch, depth, rate, scale, pixels)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"HELLO: {exc}") from exc


def _usable_scale(scale: float) -> bool:
    """Physical units per LSB: a finite number above 0 (NaN fails the comparison too)."""
    return 0.0 < scale < math.inf


@dataclass
class Samples(Message):
    """A block of accelerometer samples, interleaved by channel; the header time is the first sample's."""

    TYPE: ClassVar[MessageType] = MessageType.SAMPLES
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BBHf")
    data: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.int16))  # (count, channels)
    scale: float = 1.0

    def pack(self) -> bytes:
        data = np.asarray(self.data)
        if data.ndim == 1:
            data = data[:, None]
        fmt = {np.dtype("int16"): SampleFormat.INT16, np.dtype("int32"): SampleFormat.INT32}.get(data.dtype)
        if fmt is None or not 1 <= data.shape[1] <= 3:
            raise ProtocolError(f"SAMPLES carries int16 or int32 with 1-3 channels, got {data.dtype} x {data.shape[1]}")
        return self.LAYOUT.pack(int(fmt), data.shape[1], data.shape[0], self.scale) + \
            np.ascontiguousarray(data, dtype=SAMPLE_DTYPES[fmt]).tobytes()

    @classmethod
    def unpack(cls, payload: bytes) -> "Samples":
        if len(payload) < cls.LAYOUT.size:
            raise ProtocolError(f"SAMPLES payload of {len(payload)} bytes is shorter than its header")
        fmt, channels, count, scale = cls.LAYOUT.unpack_from(payload)
        if not _usable_scale(scale):  # NaN, infinite or 0: every window it touched would decide nonsense
            raise ProtocolError(f"SAMPLES: scale {scale} is not a finite number above 0")
        dtype = _SAMPLES_DTYPES.get(fmt)
        if dtype is None or not 1 <= channels <= 3:
            raise ProtocolError(f"SAMPLES: format {fmt} with {channels} channels is not supported")
        if len(payload) - cls.LAYOUT.size != count * channels * dtype.itemsize:
            raise ProtocolError(f"SAMPLES: {count} x {channels} samples do not match {len(payload)} bytes")
        data = np.frombuffer(payload, dtype=dtype, offset=cls.LAYOUT.size).reshape(count, channels)
        return cls(data, scale)


@dataclass
class Line(Message):
    """One X-ray detector line; the header carries its encoder count."""

    TYPE: ClassVar[MessageType] = MessageType.LINE
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<HBB")
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint16))
    bit_depth: int = 16

    @staticmethod
    def pixel_dtype(bit_depth: int) -> np.dtype:
        """How a pixel of ``bit_depth`` bits travels: one byte up to 8 bits, two (little-endian) above."""
        return np.dtype("u1") if bit_depth <= 8 else np.dtype("<u2")

    def pack(self) -> bytes:
        if not 1 <= self.bit_depth <= 16:
            raise ProtocolError(f"LINE bit depth must be 1-16, got {self.bit_depth}")
        dtype = self.pixel_dtype(self.bit_depth)
        px = np.asarray(self.pixels)
        return self.LAYOUT.pack(px.shape[0], self.bit_depth, 0) + np.ascontiguousarray(px, dtype=dtype).tobytes()

    @classmethod
    def unpack(cls, payload: bytes) -> "Line":
        if len(payload) < cls.LAYOUT.size:
            raise ProtocolError(f"LINE payload of {len(payload)} bytes is shorter than its header")
        count, depth, _ = cls.LAYOUT.unpack_from(payload)
        if not 1 <= depth <= 16:
            raise ProtocolError(f"LINE bit depth {depth} outside 1-16")
        dtype = cls.pixel_dtype(depth)
        if len(payload) - cls.LAYOUT.size != count * dtype.itemsize:
            raise ProtocolError(f"LINE: {count} pixels at {depth} bit do not match {len(payload)} bytes")
        return cls(np.frombuffer(payload, dtype=dtype, offset=cls.LAYOUT.size), depth)


@dataclass
class Reject(Message):
    """Gateway -> device: fire the actuator at an encoder count or after a delay."""

    TYPE: ClassVar[MessageType] = MessageType.REJECT
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<IBBHQ")
    decision_id: int = 0
    mode: RejectMode = RejectMode.AT_ENCODER
    lane: int = 0
    reason: int = 0
    at: int = 0

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.decision_id, int(self.mode), self.lane, self.reason, self.at)

    @classmethod
    def unpack(cls, payload: bytes) -> "Reject":
        decision, mode, lane, reason, at = _fixed(cls.LAYOUT, payload, "REJECT")
        try:
            return cls(decision, RejectMode(mode), lane, reason, at)
        except ValueError as exc:
            raise ProtocolError(f"REJECT: {exc}") from exc


@dataclass
class Ack(Message):
    """Acknowledges the frame of ``acked_type`` with sequence ``acked_seq``."""

    TYPE: ClassVar[MessageType] = MessageType.ACK
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BBHI")
    acked_type: int = 0
    acked_seq: int = 0
    code: int = 0

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.acked_type, self.code, 0, self.acked_seq)

    @classmethod
    def unpack(cls, payload: bytes) -> "Ack":
        acked_type, code, _, seq = _fixed(cls.LAYOUT, payload, cls.TYPE.name)
        return cls(acked_type, seq, code)


@dataclass
class Nak(Ack):
    """Refuses the frame of ``acked_type``/``acked_seq``; ``code`` is a :class:`NakReason`."""

    TYPE: ClassVar[MessageType] = MessageType.NAK


@dataclass
class Heartbeat(Message):
    """Sent by either side when idle; carries the sender's status bits (0 = all well)."""

    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<I")
    status: int = 0

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.status)

    @classmethod
    def unpack(cls, payload: bytes) -> "Heartbeat":
        return cls(*_fixed(cls.LAYOUT, payload, "HEARTBEAT"))


@dataclass
class Error(Message):
    """A fault the sender reports: a code and a short UTF-8 text."""

    TYPE: ClassVar[MessageType] = MessageType.ERROR
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<H")
    code: int = 0
    text: str = ""

    def pack(self) -> bytes:
        return self.LAYOUT.pack(self.code) + self.text.encode("utf-8")[:256]

    @classmethod
    def unpack(cls, payload: bytes) -> "Error":
        if len(payload) < cls.LAYOUT.size or len(payload) > cls.LAYOUT.size + 256:
            raise ProtocolError(f"ERROR payload of {len(payload)} bytes")
        return cls(cls.LAYOUT.unpack_from(payload)[0], payload[cls.LAYOUT.size:].decode("utf-8", "replace"))


MESSAGES: dict[int, type[Message]] = {cls.TYPE: cls for cls in (Hello, Samples, Line, Reject, Ack, Nak,
                                                               Heartbeat, Error)}
