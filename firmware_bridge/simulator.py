"""A sensor/actuator device on a real pty (or TCP loopback) streaming real data, with fault injection.

It streams a :class:`~firmware_bridge.sources.StreamSource` at its real rate (or N times
faster), answers HELLO and HEARTBEAT, acknowledges and records every REJECT with the
encoder position it would fire at, and can corrupt bytes, drop frames and disconnect
on a schedule.  Every injected fault is counted, so tests can check that the gateway
counted the same.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from firmware_bridge.codec import FrameDecoder, encode_frame
from firmware_bridge.protocol import Ack, Heartbeat, Hello, Message, Nak, NakReason, Reject, RejectMode
from firmware_bridge.sources import StreamSource
from firmware_bridge.transport import PtyPair

WRITE_STALL_S = 2.0  # a reader this far behind is treated as gone: the frame is dropped and counted


@dataclass
class Faults:
    """Faults to inject on the device -> gateway stream (and REJECTs lost on their way to the device)."""

    corrupt: float = 0.0                   # probability that any one byte gets a bit flipped
    drop: float = 0.0                      # probability that a frame is not sent at all
    disconnect_every: float | None = None  # seconds of streaming between disconnects
    outage_s: float = 0.5                  # how long the device stays away
    seed: int = 0
    late: float = 0.0                      # probability that a frame leaves late_ms behind its schedule;
    late_ms: float = 30.0                  # the frames after it follow in a burst (a busy device or USB hub)
    restart_every: float | None = None     # seconds of streaming between restarts of the device (watchdog,
                                           # brown-out) on a link that stays open: numbering, clock and
                                           # encoder start from 0 again, announced by an unprompted HELLO
    lose_rejects: float = 0.0              # probability that a REJECT from the gateway is lost on the wire (a
                                           # corrupted frame the device drops): it is neither answered nor fired


@dataclass
class SimStats:
    frames_generated: int = 0
    frames_sent: int = 0
    frames_dropped: int = 0          # injected drops
    frames_lost_offline: int = 0     # generated while disconnected or stalled
    frames_late: int = 0             # injected: held back behind their schedule (Faults.late)
    frames_corrupted: int = 0
    bytes_corrupted: int = 0
    disconnects: int = 0
    restarts: int = 0                # injected: Faults.restart_every
    hello_answered: int = 0
    heartbeats_answered: int = 0
    rejects: int = 0                 # distinct REJECTs received (by decision id)
    rejects_lost: int = 0            # injected: REJECTs lost on their way from the gateway (Faults.lose_rejects)
    reject_repeats: int = 0          # a REJECT of a decision already held, sent again: answered, fired once
    gateway_frames_rejected: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class _PtyLink:
    """Device end of a pty.  Like a UART with nobody listening, it does not wait for a reader:
    after one write has stalled for WRITE_STALL_S, frames are dropped (and counted) at once
    until the reader catches up.

    Nor does it write while nobody has the port open.  A pty would keep those bytes and hand
    them over when the gateway opens it, a burst of stale lines no USB device sends: its data
    goes nowhere until the host opens the port.  The link lets go of its own hold on the pty's
    port, so that the kernel can say (POLLHUP) whether anyone else holds it."""

    def __init__(self, link_path: str | None):
        self.link_path = link_path
        self._open()

    def _open(self) -> None:
        self.pty = PtyPair(self.link_path)
        os.close(self.pty.slave_fd)  # raw mode stays with the pty for whoever opens it
        self.pty.slave_fd = -1
        os.set_blocking(self.pty.master_fd, False)
        self._listener = select.poll()
        self._listener.register(self.pty.master_fd, select.POLLHUP)
        self.stalled = False

    @property
    def port(self) -> str:
        return self.pty.port

    def write(self, data: bytes) -> bool:
        if self._listener.poll(0):  # POLLHUP: nobody has the port open
            return False
        view = memoryview(data)
        deadline = time.monotonic() + (0.0 if self.stalled else WRITE_STALL_S)
        while view:
            try:
                n = os.write(self.pty.master_fd, view)
                view = view[n:]
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.stalled = True
                    return False
                select.select([], [self.pty.master_fd], [], 0.05)
            except OSError:
                return False
        self.stalled = False
        return True

    def read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.pty.master_fd], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.pty.master_fd, 65536)
        except OSError as exc:  # EIO: nobody has the slave open
            if exc.errno not in (errno.EIO, errno.EAGAIN):
                raise
            time.sleep(timeout)
            return b""

    def disconnect(self) -> None:
        self.pty.close()
        if self.link_path:
            Path(self.link_path).unlink(missing_ok=True)

    def reconnect(self) -> None:
        self._open()

    def close(self) -> None:
        self.disconnect()


class _TcpLink:
    def __init__(self, port: int):
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(1)
        self.server.settimeout(0.05)
        self.conn: socket.socket | None = None
        self.accepting = True

    @property
    def port(self) -> str:
        return f"socket://127.0.0.1:{self.server.getsockname()[1]}"

    def _accept(self) -> socket.socket | None:
        if self.conn is None and self.accepting:
            try:
                self.conn, _ = self.server.accept()
                self.conn.settimeout(WRITE_STALL_S)
            except (socket.timeout, OSError):
                return None
        return self.conn

    def write(self, data: bytes) -> bool:
        conn = self._accept()
        if conn is None:
            return False
        try:
            conn.sendall(data)
            return True
        except OSError:
            self._drop()
            return False

    def read(self, timeout: float) -> bytes:
        conn = self._accept()
        if conn is None:
            time.sleep(timeout)
            return b""
        ready, _, _ = select.select([conn], [], [], timeout)
        if not ready:
            return b""
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop()
        return data

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def disconnect(self) -> None:
        self._drop()
        self.accepting = False

    def reconnect(self) -> None:
        self.accepting = True

    def close(self) -> None:
        self._drop()
        self.server.close()


#: The decision ids a device remembers: those of its latest REJECTs, a ring as firmware keeps it.  So many
#: cover seconds of a 640 px line-scan's patches every one rejected, far beyond the gateway's three sends
#: of one REJECT in 0.3 s, so a REJECT sent again fires once; and the device's memory stays flat.
HELD_DECISION_IDS = 4096


@dataclass
class DeviceSimulator:
    """Streams ``source`` over a pty or TCP link; see the module docstring."""

    source: StreamSource
    link: str = "pty"                   # "pty" or "tcp"
    speed: float | None = 1.0           # 1.0 = real rate, N = N times faster, None = as fast as possible
    faults: Faults = field(default_factory=Faults)
    link_path: str | None = None        # pty: stable symlink to the current slave
    tcp_port: int = 0
    rejects_path: str | None = None     # JSON lines, one per REJECT received
    loop: bool = False
    start_on_hello: bool = False        # wait for the gateway's HELLO before streaming
    stats: SimStats = field(default_factory=SimStats)
    keep_rejects: bool = True           # keep every REJECT received in ``rejects`` (off for a device left running)
    held_ids: int = HELD_DECISION_IDS   # decision ids remembered, the latest, so a REJECT sent again fires once
    rejects: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()      # the link's transmitter and the frame numbers
        self._held_lock = threading.Lock()  # the REJECTs held, which the reader and a restart change
        self._replies: deque[Message] = deque()  # answers the reader has for the streaming thread to send
        self._replies_waiting = threading.Event()
        self._streaming = False
        self._seq = 0
        self._now_us = 0
        self._encoder = 0
        self._halt = threading.Event()     # ends run(); the reader keeps answering
        self._closed = threading.Event()   # ends everything
        self._online = threading.Event()
        self._online.set()
        self._greeted = threading.Event()
        self._rng = np.random.default_rng(self.faults.seed)
        self._command_rng = np.random.default_rng(self.faults.seed + 1)  # the gateway's side: its own draw
        self._held: dict[int, dict] = {}  # decision id -> the REJECT received for it, the latest held_ids, oldest first
        self._decoder = FrameDecoder()
        if self.link == "pty":
            self._link: _PtyLink | _TcpLink = _PtyLink(self.link_path)
        elif self.link == "tcp":
            self._link = _TcpLink(self.tcp_port)
        else:
            raise ValueError(f"link must be 'pty' or 'tcp', got {self.link!r}")
        self._reader = threading.Thread(target=self._serve_gateway, name="sim-reader", daemon=True)
        self._reader.start()

    @property
    def port(self) -> str:
        """What the gateway opens: the pty (or its stable link) or ``socket://127.0.0.1:PORT``."""
        return self._link.port

    # -- sending ---------------------------------------------------------------------------
    def _send(self, message: Message, timestamp_us: int, encoder: int, inject: bool) -> bool:
        with self._lock:
            self._send_replies()
            seq = self._seq
            self._seq += 1
            self._now_us, self._encoder = timestamp_us, encoder
            frame = encode_frame(message, seq, timestamp_us, encoder)
            if inject:
                if self.faults.drop and self._rng.random() < self.faults.drop:
                    self.stats.frames_dropped += 1
                    return False
                frame = self._corrupt(frame)
            return self._transmit(frame)

    def _transmit(self, frame: bytes) -> bool:
        """Write one frame if the link is up, counted as sent or lost (the caller holds the transmitter)."""
        if self._online.is_set() and self._link.write(frame):
            self.stats.frames_sent += 1
            return True
        self.stats.frames_lost_offline += 1
        return False

    def _reply(self, message: Message) -> None:
        """An answer to the gateway.  While the device streams, its streaming thread sends it, between frames
        (at once when it is waiting for the next one); the reader never waits for the transmitter, so it goes
        on reading the gateway's REJECTs while a frame waits for a gateway that is behind, as a UART's receiver
        does.  Otherwise the reader sends it itself."""
        self._replies.append(message)
        if self._streaming:
            self._replies_waiting.set()
        else:
            with self._lock:
                self._send_replies()

    def _send_replies(self) -> None:
        """Send the answers waiting, numbered on with the stream (the caller holds the transmitter)."""
        while self._replies:
            self._transmit(encode_frame(self._replies.popleft(), self._seq, self._now_us, self._encoder))
            self._seq += 1

    def _sleep_answering(self, seconds: float) -> None:
        """Wait for the next frame's time, sending the gateway's answers as they come."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if self._replies_waiting.wait(left):
                self._replies_waiting.clear()
                with self._lock:
                    self._send_replies()

    def _corrupt(self, frame: bytes) -> bytes:
        if not self.faults.corrupt:
            return frame
        hits = np.flatnonzero(self._rng.random(len(frame)) < self.faults.corrupt)
        if hits.size == 0:
            return frame
        data = bytearray(frame)
        for i in hits:
            data[i] ^= 1 << int(self._rng.integers(0, 8))
        self.stats.frames_corrupted += 1
        self.stats.bytes_corrupted += int(hits.size)
        return bytes(data)

    def run(self, duration: float | None = None, max_frames: int | None = None,
            final_heartbeats: int = 3) -> SimStats:
        """Stream until the source ends (or ``duration`` s, or ``max_frames``); then send clean heartbeats.

        The closing heartbeats carry on the sequence numbers, so a receiver can count
        every frame lost before them.
        """
        while isinstance(self._link, _TcpLink) and self._link._accept() is None and not self._halt.is_set():
            pass  # a TCP device streams once a gateway is connected
        while self.start_on_hello and not self._greeted.wait(0.05) and not self._halt.is_set():
            pass
        self._streaming = True
        try:
            self._stream(time.monotonic(), duration, max_frames)
        finally:
            self._streaming = False
            with self._lock:  # an answer the reader queued as the stream ended
                self._send_replies()
        for _ in range(final_heartbeats):
            self._send(Heartbeat(0), self._now_us, self._encoder, inject=False)
            time.sleep(0.02)
        return self.stats

    def _stream(self, started: float, duration: float | None, max_frames: int | None) -> None:
        next_disconnect = started + self.faults.disconnect_every if self.faults.disconnect_every else None
        next_restart = started + self.faults.restart_every if self.faults.restart_every else None
        lap = 0
        lap_us, lap_counts = self.source.extent()
        since_us = since_counts = 0  # the device clock and encoder count of the last restart
        away = (0.0, 0.0)  # when the link last went, and when it was back (time.monotonic())
        while not self._halt.is_set():
            for message, ts, enc in self.source.messages():
                # Laps follow each other seamlessly: time and encoder counts keep increasing.
                ts += lap * lap_us
                enc += lap * lap_counts
                if next_restart is not None and time.monotonic() >= next_restart:
                    self._restart()
                    since_us, since_counts = ts, enc  # the new zero of its clock and encoder count
                    next_restart = time.monotonic() + self.faults.restart_every
                if self._halt.is_set() or (max_frames is not None and self.stats.frames_generated >= max_frames):
                    break
                now = time.monotonic()
                if duration is not None and now - started >= duration:
                    break
                if self.speed:
                    delay = started + ts / 1e6 / self.speed - now
                    if delay > 0:
                        self._sleep_answering(delay)
                if self.faults.late and self._rng.random() < self.faults.late:
                    self.stats.frames_late += 1
                    time.sleep(self.faults.late_ms / 1e3)   # the schedule is kept: the next frames catch up
                if next_disconnect is not None and time.monotonic() >= next_disconnect:
                    away = (time.monotonic(), self._disconnect())
                    next_disconnect = time.monotonic() + self.faults.disconnect_every
                self.stats.frames_generated += 1
                if self.speed and away[0] < started + ts / 1e6 / self.speed < away[1]:
                    self._lost_offline(ts - since_us, enc - since_counts)  # the sensor went on meanwhile
                    continue
                self._send(message, ts - since_us, enc - since_counts, inject=True)
            else:
                if self.loop:
                    lap += 1
                    continue
            break

    def _restart(self) -> None:
        """Restart as firmware does after a watchdog reset, the link staying open: frame numbers begin again
        from 0 (clock and encoder count too, which the caller counts from here), and the device says HELLO
        unprompted."""
        with self._lock:
            self._seq = 0
            self.stats.restarts += 1
            self._replies.clear()  # answers not yet sent go with the device's memory
        with self._held_lock:
            self._held.clear()  # REJECTs not yet fired go with the device's memory
        self._send(self.source.hello, 0, 0, inject=False)

    def _lost_offline(self, timestamp_us: int, encoder: int) -> None:
        """A frame whose time came while the link was down: gone, not sent late in a burst, as a device's
        scanning goes on whether or not its USB link is up.  Its number goes with it, so the gateway counts
        the gap."""
        with self._lock:
            self._seq += 1
            self._now_us, self._encoder = timestamp_us, encoder
            self.stats.frames_lost_offline += 1

    def _disconnect(self) -> float:
        """Drop the link for the outage, then make it again; returns when it is back (time.monotonic())."""
        with self._lock:
            self._online.clear()
            self._send_replies()  # lost with the link, counted
            self._link.disconnect()
            self.stats.disconnects += 1
        time.sleep(self.faults.outage_s)
        with self._lock:
            self._link.reconnect()
            self._decoder.reset_sequence()
            self._online.set()
        return time.monotonic()

    # -- receiving -------------------------------------------------------------------------
    def _serve_gateway(self) -> None:
        while not self._closed.is_set():
            if not self._online.is_set():
                time.sleep(0.01)
                continue
            try:
                data = self._link.read(0.05)
            except OSError:
                time.sleep(0.05)
                continue
            if not data:
                continue
            for frame in self._decoder.feed(data):
                self._answer(frame)
            self.stats.gateway_frames_rejected = self._decoder.stats.rejected

    def _answer(self, frame) -> None:
        message = frame.message
        if isinstance(message, Hello) and message.request:
            self.stats.hello_answered += 1
            with self._held_lock:  # a gateway (re)starting: its decision ids may begin again (a new log)
                self._held.clear()
            self._greeted.set()
            self._reply(self.source.hello)
        elif isinstance(message, Heartbeat):
            self.stats.heartbeats_answered += 1
            self._reply(Heartbeat(0))
        elif isinstance(message, Reject):
            if self.faults.lose_rejects and self._command_rng.random() < self.faults.lose_rejects:
                self.stats.rejects_lost += 1
                return
            with self._held_lock:  # a restart, in the streaming thread, clears what the device remembers
                row = self._held.get(message.decision_id)
            if row is None:
                row = self._record_reject(frame.seq, message)
                with self._held_lock:
                    self._held[message.decision_id] = row
                    if len(self._held) > self.held_ids:
                        del self._held[next(iter(self._held))]
            else:  # sent again, its answer lost or late: answered again, fired once
                self.stats.reject_repeats += 1
            reply = Nak(int(Reject.TYPE), frame.seq, int(NakReason.TOO_LATE)) if row["late"] \
                else Ack(int(Reject.TYPE), frame.seq)
            self._reply(reply)

    def _record_reject(self, seq: int, reject: Reject) -> dict:
        now_us, encoder = self._now_us, self._encoder
        if reject.mode == RejectMode.AT_ENCODER:
            fire_encoder = reject.at
            fire_us = now_us + int((reject.at - encoder) * 1e6 / max(self.source.hello.rate_hz, 1e-9))
        else:
            fire_us = now_us + reject.at
            fire_encoder = encoder + int(round(reject.at * self.source.hello.rate_hz / 1e6))
        row = {"decision_id": reject.decision_id, "seq": seq, "mode": reject.mode.name.lower(),
               "lane": reject.lane, "reason": reject.reason, "at": reject.at, "received_us": now_us,
               "encoder_at_receipt": encoder, "fire_encoder": fire_encoder, "fire_us": fire_us,
               "late": fire_encoder < encoder if reject.mode == RejectMode.AT_ENCODER else False}
        if self.keep_rejects:
            self.rejects.append(row)
        self.stats.rejects += 1
        if self.rejects_path:
            with open(self.rejects_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        return row

    def stop(self) -> None:
        """Ask :meth:`run` to finish (it still sends its closing heartbeats)."""
        self._halt.set()

    def close(self) -> None:
        self._halt.set()
        self._closed.set()
        self._reader.join(timeout=1.0)
        self._link.close()

    def __enter__(self) -> "DeviceSimulator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DeviceProcess:
    """A :class:`DeviceSimulator` in a process of its own, as a real device is.

    A simulator in the gateway's process shares its interpreter lock: every frame it
    encodes and every REJECT it answers holds up the runtime's reader and decider, and a
    benchmark or demo would charge the runtime for the device's work (measured side by
    side at 1x line-scan: 27-62 % more time per decision to decide, write and log;
    benchmarks/results/linescan_device_process_ab.json).  Here the
    simulator runs in a child interpreter started afresh (never a fork of a process that
    may run threads, nor a re-import of the caller's script); the source and the
    commands go to it over a pipe, and the gateway sees only its pty.

        with DeviceProcess(source, speed=1.0) as device:
            runtime = Runtime(bundle, replace(settings, port=device.port))
            device.stream(seconds)
            ...
            stats = device.close()
    """

    def __init__(self, source: StreamSource, **options) -> None:
        child_reads, parent_writes = os.pipe()
        parent_reads, child_writes = os.pipe()
        package_root = str(Path(__file__).resolve().parent.parent)  # importable however the caller found it
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"from firmware_bridge.simulator import serve_device; serve_device({child_reads}, "
                                   f"{child_writes})"], pass_fds=(child_reads, child_writes), env=env)
        os.close(child_reads)
        os.close(child_writes)
        self._send, self._replies = Connection(parent_writes, readable=False), Connection(parent_reads, writable=False)
        self.stats: SimStats | None = None
        try:
            self._send.send((source, options))
            self.port: str = self._receive()
        except OSError:
            self._end()
            raise self._gone() from None
        except BaseException:
            self._end()
            raise

    def _receive(self):
        try:
            reply = self._replies.recv()
        except EOFError:
            raise self._gone() from None
        if isinstance(reply, BaseException):
            raise RuntimeError(f"the device simulator failed: {reply!r}") from reply
        return reply

    def stream(self, duration: float | None = None) -> None:
        """Start streaming (for ``duration`` s, or until the source ends); returns at once."""
        self._send.send(("stream", duration))

    def close(self) -> SimStats:
        """Stop streaming (the closing heartbeats still go out), close the link, return the device's counts."""
        if self.stats is None:
            try:
                self._send.send(("close", None))
                self.stats = self._receive()
            except OSError:
                raise self._gone() from None
            finally:
                self._end()
        return self.stats

    def _gone(self) -> RuntimeError:
        """What to raise when the device's process ended under a command."""
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return RuntimeError(f"the device simulator's process ended (exit code {self._process.returncode})")

    def _end(self) -> None:
        for conn in (self._send, self._replies):
            conn.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> "DeviceProcess":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.close()
        except RuntimeError:
            if exc_type is None:  # an error already on its way says more than a device that went with it
                raise


def serve_device(commands_fd: int, replies_fd: int) -> None:
    """The child of :class:`DeviceProcess`: the simulator, driven by ``stream`` and ``close`` commands."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes the device
    commands, replies = Connection(commands_fd, writable=False), Connection(replies_fd, readable=False)
    try:
        source, options = commands.recv()
        sim = DeviceSimulator(source, **options)
    except Exception as exc:  # the parent raises it with its own traceback
        replies.send(exc)
        return
    streaming: threading.Thread | None = None
    with sim:
        replies.send(sim.port)
        while True:
            try:
                command, argument = commands.recv()
            except EOFError:  # the parent is gone
                return
            if command == "stream":
                streaming = threading.Thread(target=sim.run, kwargs={"duration": argument}, name="sim-stream",
                                             daemon=True)
                streaming.start()
            elif command == "close":
                sim.stop()
                if streaming is not None:
                    streaming.join()
                replies.send(sim.stats)
                return
