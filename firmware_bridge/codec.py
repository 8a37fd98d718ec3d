"""Frames: ``COBS(header | payload | crc32c) 0x00``, and a streaming decoder that never raises.

The decoder takes bytes as they come from the port, in any chunking, and returns the
valid frames in them.  Everything else is counted in :class:`DecoderStats`: garbage
between frames, COBS errors, CRC failures, bad lengths, unknown types or versions,
payloads that do not parse, and frames lost to gaps in the sequence numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import crc32c
from cobs import cobs

from firmware_bridge.protocol import (CRC, HEADER, MAX_FRAME, MAX_PAYLOAD, MESSAGES, PROTOCOL_VERSION, Hello, Line,
                                      Message, ProtocolError)


def cobs_size(frame_bytes: int) -> int:
    """The most bytes a frame of ``frame_bytes`` takes once COBS-encoded: one code byte per 254, and one."""
    return frame_bytes + frame_bytes // 254 + 1


#: The longest encoded frame the decoder accepts (one byte to spare).
MAX_ENCODED = cobs_size(MAX_FRAME) + 1
SEQ_MOD = 1 << 32


def crc32(data: bytes) -> int:
    """CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, init and final XOR 0xFFFFFFFF."""
    return crc32c.crc32c(data)


@dataclass(slots=True)
class Frame:
    """One decoded frame: its header fields and the parsed message."""

    seq: int
    timestamp_us: int
    encoder: int
    message: Message
    version: int = PROTOCOL_VERSION

    @property
    def type(self) -> int:
        return self.message.TYPE


def encode_frame(message: Message, seq: int, timestamp_us: int = 0, encoder: int = 0) -> bytes:
    """The bytes to write to the port for one message: ``0x00 COBS(...) 0x00``.

    The leading delimiter closes any noise that reached the line since the last frame,
    so a glitch between frames costs nothing instead of corrupting the next frame.
    """
    payload = message.pack()
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"{message.TYPE.name} payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = HEADER.pack(PROTOCOL_VERSION, int(message.TYPE), len(payload), seq % SEQ_MOD,
                       timestamp_us, encoder) + payload
    return b"\x00" + cobs.encode(body + CRC.pack(crc32(body))) + b"\x00"


def line_frame_bytes(hello: Hello) -> int:
    """Bytes on the wire per LINE frame of the device that sent ``hello`` (its pixels at its bit depth)."""
    body = HEADER.size + Line.LAYOUT.size + hello.pixels * Line.pixel_dtype(hello.bit_depth).itemsize + CRC.size
    return cobs_size(body) + 2  # and the delimiters on either side


@dataclass
class DecoderStats:
    """What the decoder saw; nothing is dropped without being counted here."""

    frames: int = 0              # valid frames delivered
    bytes_in: int = 0
    garbage_bytes: int = 0       # bytes discarded outside valid frames
    oversize: int = 0            # no delimiter within the largest possible frame
    cobs_errors: int = 0
    short_frames: int = 0        # shorter than header + CRC
    crc_errors: int = 0
    bad_version: int = 0
    bad_length: int = 0          # header length disagrees with the frame
    unknown_type: int = 0
    bad_payload: int = 0         # payload does not parse for its type
    seq_gaps: int = 0            # times a gap was seen
    lost_frames: int = 0         # frames missing according to sequence numbers
    duplicates: int = 0          # sequence number repeated or gone backwards
    device_restarts: int = 0     # the sender numbered from the start again without the link closing

    @property
    def rejected(self) -> int:
        return (self.oversize + self.cobs_errors + self.short_frames + self.crc_errors + self.bad_version
                + self.bad_length + self.unknown_type + self.bad_payload)

    def to_dict(self) -> dict:
        return asdict(self) | {"rejected": self.rejected}


#: Frames in a row, each numbered on from the one before but below the tracked number, that show the
#: sender restarted when its HELLO was lost: a link does not replay old frames in order.
RESTART_RUN = 3


class FrameDecoder:
    """Feed bytes in, get valid :class:`Frame` objects out; hostile input only moves counters."""

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._buffer = bytearray()
        self._discarding = False     # inside an oversize run: drop until the next delimiter
        self._last_seq: int | None = None
        self._behind: tuple[int, int] | None = None  # (the last, how many) numbers in a row below the tracked
                                                      # one, each on from the one before

    def reset_sequence(self) -> None:
        """Forget the last sequence number (after a reconnect the device may start over)."""
        self._last_seq, self._behind = None, None

    def feed(self, data: bytes) -> list[Frame]:
        self.stats.bytes_in += len(data)
        frames: list[Frame] = []
        # One split in C instead of a find per frame: a read holds many frames (and an empty
        # piece before each, from its leading delimiter).  The last piece has no delimiter yet.
        *chunks, tail = data.split(b"\x00")
        for chunk in chunks:
            if self._discarding:
                self.stats.garbage_bytes += len(chunk) + 1
                self._discarding = False
                continue
            if self._buffer:
                self._buffer += chunk
                chunk = bytes(self._buffer)
                self._buffer.clear()
            if chunk:  # an empty piece is the normal gap between two frames
                frame = self._decode(chunk)
                if frame is not None:
                    frames.append(frame)
        self._keep(tail)
        return frames

    def _keep(self, tail: bytes) -> None:
        if self._discarding:
            self.stats.garbage_bytes += len(tail)
            return
        self._buffer += tail
        if len(self._buffer) > MAX_ENCODED:
            self.stats.oversize += 1
            self.stats.garbage_bytes += len(self._buffer)
            self._buffer.clear()
            self._discarding = True

    def _reject(self, counter: str, chunk: bytes) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self.stats.garbage_bytes += len(chunk) + 1

    def _decode(self, chunk: bytes) -> Frame | None:
        stats = self.stats
        if len(chunk) > MAX_ENCODED:
            self._reject("oversize", chunk)
            return None
        try:
            raw = cobs.decode(chunk)
        except cobs.DecodeError:
            self._reject("cobs_errors", chunk)
            return None
        if len(raw) < HEADER.size + CRC.size:
            self._reject("short_frames", chunk)
            return None
        body, (crc,) = raw[:-CRC.size], CRC.unpack_from(raw, len(raw) - CRC.size)
        if crc32(body) != crc:
            self._reject("crc_errors", chunk)
            return None
        version, mtype, length, seq, timestamp, encoder = HEADER.unpack_from(body)
        if version != PROTOCOL_VERSION:
            self._reject("bad_version", chunk)
            return None
        if length != len(body) - HEADER.size:
            self._reject("bad_length", chunk)
            return None
        cls = MESSAGES.get(mtype)
        if cls is None:
            self._reject("unknown_type", chunk)
            return None
        try:
            message = cls.unpack(body[HEADER.size:])
        except ProtocolError:
            self._reject("bad_payload", chunk)
            return None
        self._track(seq, isinstance(message, Hello) and not message.request)
        stats.frames += 1
        return Frame(seq, timestamp, encoder, message, version)

    def _track(self, seq: int, announces: bool) -> None:
        """Count gaps and duplicates; follow a sender that restarted (power-up, watchdog) on a link that
        stayed open, as a UART does.  Its numbering starts over: it announces itself with a HELLO
        (``announces``), or, if that HELLO was lost, ``RESTART_RUN`` frames in a row number on from
        each other below the tracked number.  Without this every later frame would count as a duplicate, and
        frames lost after the restart would go uncounted until the numbers caught up."""
        if self._last_seq is not None:
            step = (seq - self._last_seq) % SEQ_MOD
            if step == 0 or step >= SEQ_MOD // 2:
                on_from = self._behind is not None and (seq - self._behind[0]) % SEQ_MOD == 1
                self._behind = (seq, self._behind[1] + 1 if on_from else 1)
                if not announces and self._behind[1] < RESTART_RUN:
                    self.stats.duplicates += 1
                    return
                if not announces:  # the frames before this one were the restart's first, not duplicates
                    self.stats.duplicates -= RESTART_RUN - 1
                self.stats.device_restarts += 1
            elif step > 1:
                self.stats.seq_gaps += 1
                self.stats.lost_frames += step - 1
        self._last_seq, self._behind = seq, None
