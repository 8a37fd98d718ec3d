"""The runtime: serial stream in, decisions and timed REJECTs out, within a latency budget.

Two threads.  The reader reads the port, decodes frames, assembles windows or tiles
and puts them on a bounded queue (a full queue sheds the oldest unit, which gets the
fail-safe decision: overload is counted, never absorbed by memory).  The decider takes
units, checks each against its deadline (arrival of its last sample + budget),
preprocesses exactly as the manifest says, infers, decides, writes the REJECT and logs
the decision.  A unit that cannot be decided in time gets the fail-safe decision at
once.  When the stream is idle the backend is kept warm.
"""

from __future__ import annotations

import gc
import os
import queue
import socket
import statistics
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edge.backends import load_backend
from edge.bundle import Bundle, BundleError, open_bundle
from edge.data.preprocess import model_input, tile_input
from edge.runtime.assembler import LineAssembler, Unit, VibrationAssembler
from edge.runtime.decision_log import DecisionLog, DecisionRow, next_decision_id
from edge.runtime.decisions import DecisionPolicy, PolicyError, RejectScheduler, Verdict, settings_problem
from edge.runtime.device_watch import DeviceWatch
from edge.runtime.metrics import STAGES, RuntimeMetrics, StatusServer, StatusServerError, listen_address
from edge.runtime.pacing import ReadPacer, line_pacer
from edge.runtime.realtime import check_priority, current_priority, enter_realtime
from edge.runtime.reject_ledger import ANSWER_TIMEOUT_S, SENDS, AwaitingDevice, InFlight, RejectLedger
from firmware_bridge.codec import FrameDecoder, encode_frame, line_frame_bytes
from firmware_bridge.protocol import (Ack, Error, Heartbeat, Hello, Line, MessageType, Nak, NakReason, Reject, Samples,
                                      SensorKind)
from firmware_bridge.transport import ReconnectingPort

#: The sensor a bundle of each kind reads, and how the operator is told what a device is.
SENSOR_OF_KIND = {"vibration": SensorKind.VIBRATION, "linescan": SensorKind.LINESCAN}
SENSOR_WORDS = {SensorKind.VIBRATION: "vibration sensor", SensorKind.LINESCAN: "line-scan detector"}


@dataclass
class RuntimeSettings:
    port: str
    budget_ms: float | None = None          # default: the manifest's
    on_miss: str | None = None              # reject | pass | hold; default: the manifest's
    reject_classes: list[str] | None = None  # default: the manifest's
    threshold: float | None = None
    log_path: str = "decisions.db"
    log_max_mb: float = 2048.0              # the log's oldest rows are deleted beyond this; 0: unbounded
    http: str | None = "127.0.0.1:9108"     # None: no status server
    baud: int = 921600
    channel_index: int = 0                  # which axis of a multi-axis stream feeds the model
    hop: int | None = None                  # vibration hop; default: the manifest's
    tile_lines: int | None = None           # line-scan tile height; default: the model's input
    tile_overlap: int = 0
    lanes: int | None = None                # line-scan patches per tile; default: as many as fit the detector
    pixels: int = 640                       # expected detector width (warm-up only; the stream decides)
    distance: int = 0                       # encoder counts from scanner to actuator
    max_consecutive: int = 0                # reject lockout; 0: off
    queue_size: int = 64
    keepalive_s: float = 0.5
    heartbeat_s: float = 1.0
    warmup: int = 50
    threads: int | None = 1
    paced_reads: bool = True                # sleep until a window or tile can (nearly) complete (see pacing.py)
    realtime_priority: int = 0              # SCHED_FIFO priority of the reader and decider; 0: ordinary (realtime.py)
    trusted_keys: list[str] = field(default_factory=list)


#: REJECTs awaiting the device's answer beyond which the fail-safe of belt lost in a gap waits (see
#: ``Runtime._unseen_may_go``): a tile's worth on 32 lanes, 1.5 kB on the wire, well within the 4 kB a pty
#: or a USB serial driver buffers, so a scanned tile's REJECTs never wait behind them.
UNSEEN_REJECTS_IN_FLIGHT = 32
#: Seconds before its part reaches the actuator from which a tile of lost belt waits only for a larger
#: backlog (``UNSEEN_NEAR_REJECTS_IN_FLIGHT``): time for every send of its REJECTs (``reject_ledger.SENDS`` of
#: ``ANSWER_TIMEOUT_S`` each) and as much again.
UNSEEN_DUE_S = 2 * ANSWER_TIMEOUT_S * SENDS
#: The backlog a tile that near waits for: 64 REJECTs, 3 kB on the wire, still within what a pty or a USB
#: serial driver buffers, so the decider's write never waits for the device to read.  With the actuator
#: 0.5 s on, every tile of lost belt is that near; all of them at once, after a 3 s outage, were 380 REJECTs,
#: and the write of the last waited 43 ms, past the budget of the tile scanned meanwhile.
UNSEEN_NEAR_REJECTS_IN_FLIGHT = 64
#: Seconds before its part reaches the actuator from which a tile of lost belt goes whatever the backlog:
#: one send and the time to answer it.
UNSEEN_LAST_S = ANSWER_TIMEOUT_S
#: How often a decider holding such tiles back looks again.
UNSEEN_POLL_S = 0.002
#: The journal hears of signal or belt lost in gaps of the stream at most this often (a noisy cable loses
#: frames often); the counters hold every one.
JOURNAL_EVERY_S = 10.0


class JournalGrowth:
    """What the journal last heard of some counts, so that it hears at most every ``JOURNAL_EVERY_S`` how much
    they grew since (a noisy cable loses frames often; the counters hold every one)."""

    def __init__(self, size: int):
        self._said_at = 0.0
        self._said: tuple = (0,) * size

    def grown(self, counts: tuple) -> tuple | None:
        """How much each of ``counts`` grew since the journal last heard of them, when the first grew and the
        journal may hear of it now (it is then taken as heard); None otherwise."""
        if counts[0] == self._said[0] or time.monotonic() - self._said_at < JOURNAL_EVERY_S:
            return None
        grown = tuple(now - before for now, before in zip(counts, self._said))
        self._said_at, self._said = time.monotonic(), counts
        return grown


class InferenceTimeEstimate:
    """How long the next inference will take: the median of recent ones, seeded by the warm-up.

    A median, not a high quantile: one slow call (a page fault, a preempted core) must not
    push every following window into the fail-safe.  A longer slow spell can; the decider
    then probes the backend once per keep-alive interval so the estimate recovers.
    """

    def __init__(self, size: int = 64):
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(value)

    def expected(self) -> float:
        # statistics.median sorts the 64 floats in C: the same number as numpy's median, asked of
        # every unit, for a tenth of its cost (2 us against 20 us on a warm core).
        return statistics.median(self._values) if self._values else 0.0


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify, WatchdogSec=) we are ready or alive; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            pass


class Runtime:
    def __init__(self, bundle: str | Path | Bundle, settings: RuntimeSettings):
        """Open and verify the bundle (or take one the caller opened with ``settings.trusted_keys``, so that
        it can look at the bundle first without verifying it twice), load its backend, open the log."""
        self.settings = s = settings
        if not isinstance(bundle, Bundle):
            bundle = open_bundle(bundle, trusted_keys=s.trusted_keys)
        elif s.trusted_keys and not bundle.signed_by_trusted_key:
            raise BundleError(f"bundle {bundle.path} was opened without checking its signature against the trusted "
                              "keys; open it with them")
        self.bundle = bundle
        if problem := settings_problem(bundle.kind, s.distance, s.channel_index):
            raise PolicyError(f"{problem}; nothing was run")
        m = self.bundle.manifest
        self.manifest = m
        self.sha256 = self.bundle.manifest_sha256
        self.budget_s = (s.budget_ms if s.budget_ms is not None else m["runtime"]["budget_ms"]) / 1000.0
        self.policy = DecisionPolicy.for_bundle(m, s.reject_classes, s.threshold, s.on_miss)
        pre = m["preprocessing"]
        self.kind = self.bundle.kind
        self.normalization = pre["normalization"]
        self.pacer: ReadPacer | None = None
        self._paced_stream: tuple[float, int] | None = None  # (lines/s, bytes a line) the line pacer plans for
        if self.kind == "vibration":
            self.assembler = VibrationAssembler(pre["window"], s.hop or pre["hop"], s.channel_index, pre["rate_hz"])
            self.pacer = ReadPacer(pre["rate_hz"]) if s.paced_reads else None
        else:
            width = pre.get("patch_width")
            self.assembler = LineAssembler(s.tile_lines or pre["tile_lines"], s.tile_overlap,
                                           s.lanes or (None if width else 1), width, actuator_distance=s.distance)
        self.scheduler = RejectScheduler(self.kind, s.distance, s.max_consecutive)
        self.backend = load_backend(self.bundle, threads=s.threads)
        self.metrics = RuntimeMetrics({"family": m["model"]["family"], "precision": m["precision"],
                                       "backend": m["backend"]["name"], "sha256": self.sha256}, self.counters,
                                      settings=self.decision_settings())
        self.decoder = FrameDecoder()
        self.port = ReconnectingPort(s.port, s.baud, on_reconnect=self._reconnected, on_lost=self._port_lost)
        self.log = DecisionLog(s.log_path, max_bytes=int(s.log_max_mb * 1e6))
        self._next_id = self._first_id = next_decision_id(s.log_path)
        self._queue: queue.Queue[Unit] = queue.Queue(maxsize=s.queue_size)
        self._write_lock = threading.RLock()  # a reconnect inside a write sends HELLO
        self._finish_lock = threading.Lock()  # decision ids are unique across both threads
        self._seq = 0
        self._stop = threading.Event()            # the decider ends
        self._stop_queueing = threading.Event()   # then the reader queues no unit, only hears the device's answers
        self._reader_closing = threading.Event()  # the reader has seen _stop_queueing
        self._stop_reading = threading.Event()    # the reader ends too
        self._infer_times = InferenceTimeEstimate()
        self._last_inference = 0.0  # perf_counter() at the end of the latest inference
        self.device_hello: Hello | None = None  # the device's latest HELLO; None until one comes after (re)connecting
        self._hello_asked = 0.0                 # when the runtime last asked for it
        self._started = False
        self.thread_cpu_s: dict[str, float] = {}  # CPU time of the reader and decider threads, once they end
        self.thread_failures: list[str] = []      # the threads that died of an error (tracebacks on stderr)
        if s.realtime_priority:
            check_priority(s.realtime_priority)
        self.thread_priority: dict[str, int] = {}  # SCHED_FIFO priority each runtime thread got (0: ordinary)
        self._signal_lost = False  # the latest vibration window held one constant value (said once per spell)
        self._untimed_said = 0     # the latest encoder epoch whose untimed REJECTs were said
        self._unseen_said = JournalGrowth(3)     # belt lost in gaps: lines, tiles given the fail-safe, lines passed
        self._undecided_said = JournalGrowth(2)  # vibration signal lost in gaps: seconds, frames lost
        self._unseen: deque[Unit] = deque()  # tiles of belt lost in a gap, for the decider's spare time
        self.rejects_in_flight = RejectLedger()
        self.awaiting_device = AwaitingDevice()
        self._device_before_outage: Hello | None = None  # whom the REJECTs awaiting the device were decided for
        self._frames_at_reconnect = 0                    # data frames heard before the latest reconnect
        self.device_watch = DeviceWatch(s.port, s.heartbeat_s)
        self.counts = {"data_frames": 0, "deadline_fail_safe": 0, "late_decisions": 0, "overload_fail_safe": 0,
                       "no_signal_fail_safe": 0, "non_finite_fail_safe": 0, "shutdown_fail_safe": 0,
                       "gap_fail_safe": 0,
                       "keepalives": 0, "estimate_probes": 0, "rejects_sent": 0, "rejects_not_written": 0,
                       "rejects_untimed": 0, "rejects_passed": 0, "reject_resends": 0, "acks": 0, "answers_late": 0,
                       "naks": 0, "naks_too_late": 0, "lockouts": 0, "reconnects": 0, "hello_mismatch": 0,
                       "samples_without_channel": 0, "frames_of_other_kind": 0, "hello_requests": 0,
                       "paced_sleeps": 0, "frames_after_stop": 0, "rejects_sent_after_outage": 0}
        self.server = None
        if s.http:
            try:
                self.server = StatusServer(self.metrics, self.counters, *listen_address(s.http))
            except StatusServerError:
                self.close()
                raise

    def decision_settings(self) -> dict:
        """What decides, as in effect (the bundle's, or the operator's where given): shown on the status page."""
        p = self.policy
        out = {"budget_ms": self.budget_s * 1e3, "on_miss": p.on_miss,
               "reject_classes": [c for c, r in zip(p.classes, p.reject_index) if r],
               "threshold": p.threshold if p.threshold is not None else "argmax"}
        if self.kind == "linescan":
            out["distance"] = self.settings.distance
        return out | {"lockout_after": self.settings.max_consecutive or "off"}

    # -- counters ---------------------------------------------------------------------------
    def counters(self) -> dict:
        d = self.decoder.stats.to_dict()
        out = {f"decoder_{k}": v for k, v in d.items()}
        out |= {f"link_{k}": v for k, v in self.port.stats.to_dict().items() if k != "last_error"}
        out |= {f"assembler_{k}": v for k, v in self.assembler.stats.to_dict().items()}
        out |= self.counts | self.device_watch.counts
        out |= {"decisions": self._next_id - self._first_id, "log_written": self.log.written,
                "log_retired": self.log.retired, "log_failed": self.log.failed,
                "log_wal_catch_ups": self.log.wal_catch_ups,
                "log_reopened": self.log.reopened,
                "queue_depth": self._queue.qsize(),
                "unseen_tiles_waiting": len(self._unseen),         # belt lost in a gap, its fail-safe still to give
                "rejects_in_flight": len(self.rejects_in_flight),  # written, the device's answer still to come
                "rejects_awaiting_device": len(self.awaiting_device),
                "realtime_priority": min(self.thread_priority.values(), default=0),
                "pacing_overruns": self.pacer.overruns if self.pacer else 0,
                "pacing_late_wakeups": self.pacer.late_wakeups if self.pacer else 0,
                "pacing_backlogs": self.pacer.backlogs if self.pacer else 0,
                "thread_failures": len(self.thread_failures)}
        return out

    def _reconnected(self) -> None:
        if self.device_hello is not None:
            self._device_before_outage = self.device_hello
        self.device_hello = None  # another device may be there now: it is checked anew
        self._frames_at_reconnect = self.counts["data_frames"]
        self.decoder.reset_sequence()
        self.counts["reconnects"] += 1  # last: REJECTs awaiting the device wait for its HELLO from here on
        print(f"runtime: port {self.settings.port} is there again", file=sys.stderr, flush=True)
        self._ask_hello()

    def _ask_hello(self) -> None:
        self._hello_asked = time.monotonic()
        self._send(Hello(request=True))

    def _ask_hello_until_answered(self, now: float) -> None:
        """Ask for the device's HELLO again each heartbeat interval until one comes: a HELLO lost on the
        wire would otherwise leave a device at another rate, or without the model's axis, unchecked."""
        if self.device_hello is None and now - self._hello_asked >= self.settings.heartbeat_s:
            self.counts["hello_requests"] += 1
            self._ask_hello()

    def _device_restarted(self) -> None:
        """Say in the journal that the device restarted on a link that stayed open (a watchdog reset, a
        brown-out): the decoder follows its new numbering, the assembler drops the unit across it."""
        lost = ("REJECTs it had not yet fired were lost with its memory: parts already between scanner and "
                "actuator may pass unchecked" if self.kind == "linescan" else "the window across it is dropped")
        print(f"runtime: the device on {self.settings.port} restarted: its frame numbers, clock and encoder count "
              f"begin again at 0; {lost} (counted as decoder_device_restarts)", file=sys.stderr, flush=True)

    def _port_lost(self, why: str) -> None:
        """Say in the journal when the device goes (or is missing at start): the runtime waits for it."""
        print(f"runtime: port {self.settings.port}: {why}; waiting for the device, windows resume when it is back",
              file=sys.stderr, flush=True)

    def _send(self, *messages) -> bool:
        """Frame the messages with consecutive sequence numbers and write them in one port write."""
        with self._write_lock:
            stamp = int(time.monotonic() * 1e6)
            frames = b"".join(encode_frame(m, self._seq + k, stamp) for k, m in enumerate(messages))
            self._seq += len(messages)
            return self.port.write(frames)

    # -- reader -----------------------------------------------------------------------------
    def _read_loop(self) -> None:
        last_rx = time.monotonic()
        self.device_watch.started()
        while not self._stop_reading.is_set():
            if self._stop_queueing.is_set():
                self._reader_closing.set()
            now = time.monotonic()
            if not self._stop.is_set():  # stopping: a silence or a missing HELLO no longer matters
                self.device_watch.watch(self.decoder.stats.frames, self.port.connected, now)
                self.device_watch.woke_empty(self.port.stats.empty_wakeups)
                self._ask_hello_until_answered(now)
            slept_from = None
            pause = 0.0
            if self.pacer and not self._reader_closing.is_set():
                pause = self.pacer.pause(time.monotonic(), self.assembler.samples_needed())
            if pause:
                self.counts["paced_sleeps"] += 1
                slept_from = time.monotonic()
                if self._stop_queueing.wait(pause):
                    continue  # stopping: the next pass hears the device's answers, unpaced
                self.pacer.woke(pause, time.monotonic() - slept_from)
                data = self.port.read_waiting()  # arrived while asleep: stamped with the start of the sleep
                self.pacer.woke_to(time.monotonic(), len(data))
            else:
                data = self.port.read(65536)
            now = time.monotonic()
            if data:
                last_rx = now
                t0 = time.perf_counter()
                exact = slept_from is None
                if self._ingest(data, now if exact else slept_from, exact) and not exact:
                    self.pacer.overrun(now)
                self.metrics.stages["decode_assemble"].observe((time.perf_counter() - t0) * 1e3)
            elif now - last_rx > self.settings.heartbeat_s:
                self._send(Heartbeat(0))
                last_rx = now
            # After the answers this pass read: a reader held up (a stall of the host) does not send again
            # what the device answered meanwhile.
            self._send_unanswered_again(time.monotonic())
            if self.awaiting_device:
                self._send_awaiting_device(time.monotonic())

    def _ingest(self, data: bytes, arrived: float, exact: bool) -> int:
        """Decode, assemble and queue; returns the number of units completed.

        Every frame of one read has the same arrival time, so a read's SAMPLES blocks are
        assembled together, once; a line-scan tile is queued as soon as its last line is in.
        ``exact`` is False when ``arrived`` is the start of the reader's sleep, not the arrival.
        """
        completed = 0
        blocks = []
        lines, last_line_us = 0, 0
        restarts = self.decoder.stats.device_restarts
        closing = self._reader_closing.is_set()
        for frame in self.decoder.feed(data):
            msg = frame.message
            if closing and isinstance(msg, (Samples, Line)):  # stopping: only the device's answers matter now
                self.counts["frames_after_stop"] += 1
                continue
            if isinstance(msg, Samples) and self.kind == "vibration":
                if msg.data.shape[1] > self.settings.channel_index:
                    blocks.append((msg.data, msg.scale, frame.timestamp_us))
                    if self.pacer:
                        self.pacer.received(arrived, msg.data.shape[0], frame.timestamp_us, exact)
                else:  # the device lacks the axis the model reads (said once, at its HELLO)
                    self.counts["samples_without_channel"] += 1
            elif isinstance(msg, Line) and self.kind == "linescan":
                completed += self._enqueue_all(self.assembler.push(msg.pixels, frame.encoder, frame.timestamp_us,
                                                                   arrived))
                lines, last_line_us = lines + 1, frame.timestamp_us
            elif isinstance(msg, (Samples, Line)):  # a sensor of the other kind (said once, at its HELLO)
                self.counts["frames_of_other_kind"] += 1
            else:
                self._control(msg)
                continue
            self.counts["data_frames"] += 1
        if self.decoder.stats.device_restarts != restarts:
            self._device_restarted()
        if blocks:
            completed += self._enqueue_all(self.assembler.push_blocks(blocks, arrived))
            if grown := self._undecided_said.grown((self.assembler.stats.seconds_undecided,
                                                    self.decoder.stats.lost_frames)):
                self._say_undecided(*grown)
        if lines and self.pacer:  # the read's lines arrived together: the latest one says most of the device clock
            self.pacer.received(arrived, lines, last_line_us, exact)
        if lines:
            stats = self.assembler.stats
            if grown := self._unseen_said.grown((stats.lines_unseen, stats.unseen_tiles, stats.lines_unseen_passed)):
                self._say_unseen(*grown)
        return completed

    def _enqueue_all(self, units: list[Unit]) -> int:
        """Queue units for the decider; returns how many were seen.  Belt lost in a gap of the stream (units
        not seen) gets the fail-safe from the decider: the first of its tiles, the soonest at the actuator, is
        queued (it wakes the decider), the others wait for the decider's spare time (:meth:`_next_unit`)."""
        seen = [unit for unit in units if unit.seen]
        unseen = [unit for unit in units if not unit.seen]
        if unseen:
            self._unseen.extend(unseen[1:])
            self._enqueue(unseen[0])
        for unit in seen:
            self._enqueue(unit)
        return len(seen)

    def _say_unseen(self, lines: int, tiles: int, passed: int) -> None:
        """Tell the journal of belt lost in gaps of the line-scan stream since it last heard (at most every 10 s):
        how many lines, how many tiles of it got the fail-safe, how many lines had passed the actuator before
        the stream went on."""
        print(f"runtime: {lines} lines of belt never reached the gateway intact (lost or corrupted on the link): "
              f"{tiles} tiles of it, every lane, got the fail-safe ({self.policy.on_miss}; counted as gap_fail_safe)"
              + (f"; {passed} lines had already passed the actuator, their parts unchecked "
                 "(assembler_lines_unseen_passed; `drsn-edge decisions --fail-safe` lists which)" if passed else ""),
              file=sys.stderr, flush=True)

    def _say_undecided(self, seconds: float, lost: int) -> None:
        """Tell the journal of vibration signal no window held because of gaps in the stream since it last heard
        (at most every 10 s): how long the machine went unwatched, and how many frames were lost meanwhile."""
        print(f"runtime: {seconds:.2f} s of signal never decided: gaps in the stream "
              f"({lost} frames lost or corrupted on the link, or a device that restarted) broke the "
              "windows across them, so the machine went unwatched then (counted as assembler_seconds_undecided)",
              file=sys.stderr, flush=True)

    def _enqueue(self, unit: Unit) -> None:
        while True:
            try:
                self._queue.put_nowait(unit)
                return
            except queue.Full:
                try:
                    oldest = self._queue.get_nowait()
                except queue.Empty:
                    continue
                self._finish_tile(oldest, self._fail_safe(oldest, "overload"))

    @property
    def _latest_device(self) -> Hello | None:
        """The latest HELLO heard: this connection's, else the one before the outage (after a reconnect the
        device's lines come before its HELLO)."""
        return self.device_hello or self._device_before_outage

    def _control(self, msg) -> None:
        if isinstance(msg, Hello) and not msg.request:
            before = self._latest_device
            self.device_hello = msg
            if self.kind == "linescan" and before and (msg.device_id, msg.pixels) != (before.device_id, before.pixels):
                self.assembler.start_afresh()  # another detector: the jump in encoder counts is no belt lost
            self._check_hello(msg)
            if self.kind == "linescan" and self.settings.paced_reads and msg.rate_hz > 0:
                self._pace_lines(msg)
        elif isinstance(msg, Nak):
            self.counts["naks"] += 1
            if msg.code == NakReason.TOO_LATE:
                self.counts["naks_too_late"] += 1
            if (flight := self._answered(msg)) and msg.code == NakReason.BUSY and \
                    flight.sends < self.rejects_in_flight.sends:  # its queue is full: sent again once due
                self.rejects_in_flight.sent(msg.acked_seq, [replace(flight, sent_at=time.monotonic())])
            elif flight:
                self._mark(flight.decision_id, "too_late" if msg.code == NakReason.TOO_LATE else "refused")
        elif isinstance(msg, Ack) and self._answered(msg):
            self.counts["acks"] += 1
        elif isinstance(msg, Error):
            self.device_watch.error(msg)
        elif isinstance(msg, Heartbeat):
            self.device_watch.status(msg.status)

    def _answered(self, answer: Ack | Nak) -> InFlight | None:
        """The REJECT an ACK or NAK answers; None (counted as ``answers_late``) for one that is no longer in
        flight: sent again meanwhile, or given up, or not a REJECT at all."""
        flight = self.rejects_in_flight.answered(answer.acked_seq) if answer.acked_type == MessageType.REJECT else None
        if flight is None:
            self.counts["answers_late"] += 1
        return flight

    def _send_unanswered_again(self, now: float) -> None:
        """Send again the REJECTs the device has not answered in time, but for those whose firing count is of
        an encoder count the device has since begun again; give up those sent often enough."""
        due, given_up = self.rejects_in_flight.due(now)
        again = self._still_timed(due)
        if again:
            written, let_go = self._write_or_keep([replace(f, sent_at=now, sends=f.sends + 1) for f in again], again)
            if written:
                self.counts["reject_resends"] += len(again)
            given_up += let_go
        self._give_up(given_up)

    def _still_timed(self, flights: list[InFlight]) -> list[InFlight]:
        """The flights whose firing count is on the device's current encoder count; the others are marked
        ``untimed`` (and one never written is no longer counted as not written: its row says why)."""
        timed = []
        for flight in flights:
            if not self._untimed(flight.encoder_epoch):
                timed.append(flight)
                continue
            if not flight.written:
                with self._finish_lock:
                    self.counts["rejects_not_written"] -= 1
            self._mark(flight.decision_id, "untimed")
        return timed

    def _write_or_keep(self, flights: list[InFlight], to_keep: list[InFlight]) -> tuple[bool, list[InFlight]]:
        """Write ``flights``; when that fails because the device is gone, keep ``to_keep`` (the same REJECTs, as
        they are to be remembered) for its return if they are line-scan ones, timed by encoder count.  A
        vibration REJECT is timed from when it arrives, and a device that is there but does not read would
        only hold the writer up again.  Returns (written, those neither written nor kept)."""
        outages = self.port.stats.outages
        if self._send_rejects(flights):
            return True, []
        if self.kind == "linescan" and self._gone(outages):
            return False, self.awaiting_device.add(to_keep, self.counts["reconnects"])  # the oldest, pushed out
        return False, to_keep

    def _send_awaiting_device(self, now: float) -> None:
        """Write the line-scan REJECTs the device could not be given while it was gone, once the same device
        is back and streaming (so its encoder count is known to go on, or to have begun again: those are
        untimed).  The device answers each as any REJECT: ACK and fire at its count (once, for one it already
        held), or TOO_LATE for a part already past."""
        back, before = self.device_hello, self._device_before_outage
        if back is None or self.counts["data_frames"] <= self._frames_at_reconnect or not self.port.connected:
            return
        flights, too_old = self.awaiting_device.take(now, self.counts["reconnects"])
        self._give_up(too_old)
        if before is not None and (back.device_id, back.pixels) != (before.device_id, before.pixels):
            self._give_up(flights)  # another device, or another detector width: a belt it never saw
            return
        timed = self._still_timed(flights)
        if not timed:
            return
        written, let_go = self._write_or_keep(
            [replace(f, sent_at=now, sends=f.sends + 1 if f.written else 1, written=True) for f in timed], timed)
        if not written:  # gone again: kept as they were, from when they were decided or last sent
            self._give_up(let_go)
            return
        first = [f for f in timed if not f.written]
        with self._finish_lock:  # the decider counts REJECTs not written under it
            for key, change in (("rejects_sent", len(first)), ("rejects_not_written", -len(first)),
                                ("reject_resends", len(timed) - len(first)),
                                ("rejects_sent_after_outage", len(timed))):
                self.counts[key] += change
        for flight in first:
            self._mark(flight.decision_id, "sent")

    def _gone(self, outages_before: int) -> bool:
        """Whether a write that failed did so because the device is gone (not because it was too slow to take it:
        writing to a device that does not read would only hold the reader up)."""
        return not self.port.connected or self.port.stats.outages != outages_before

    def _give_up(self, flights: list[InFlight]) -> None:
        """REJECTs the device never answered: said, counted, and their rows marked ``unanswered``.  One never
        written (decided while the device was gone) stays ``not_written``, as its row already says."""
        for flight in flights:
            if not flight.written:
                continue
            self.device_watch.unanswered(flight.decision_id, flight.sends)
            self._mark(flight.decision_id, "unanswered")

    def _send_rejects(self, flights: list[InFlight]) -> bool:
        """Write the flights' REJECTs in one port write, in the ledger before the write (an answer can come
        before the write call returns); False, and out of the ledger again, when the device is gone."""
        with self._write_lock:
            first_seq = self._seq
            self.rejects_in_flight.sent(first_seq, flights)
            if self._send(*[flight.command for flight in flights]):
                return True
            self.rejects_in_flight.forget(first_seq, len(flights))
            return False

    def _mark(self, decision_id: int, reject_command: str) -> None:
        """Record on a decision's row what became of its REJECT after it was written.  Taken under the
        decider's lock, so that the row, written after the REJECT, is there to be marked."""
        with self._finish_lock:
            self.log.set_reject_command(decision_id, reject_command)
        self.metrics.mark(decision_id, reject_command)

    def _pace_lines(self, msg: Hello) -> None:
        """Plan the reader's sleeps for the line rate and width the device's HELLO gives (not the bundle's),
        again whenever a device comes back with others: a wider line fills the kernel's buffer sooner."""
        stream = (msg.rate_hz, line_frame_bytes(msg))
        if stream != self._paced_stream:
            self.pacer = line_pacer(*stream, before=self.pacer)
            self._paced_stream = stream

    def _check_hello(self, msg: Hello) -> None:
        """Say where the operator looks when the device's HELLO does not fit the bundle or the settings."""
        if msg.sensor != SENSOR_OF_KIND[self.kind]:
            self.counts["hello_mismatch"] += 1
            print(f"runtime: the device {msg.device_id!r} is a {SENSOR_WORDS[msg.sensor]}, but the bundle's model "
                  f"reads {'vibration windows' if self.kind == 'vibration' else 'line-scan tiles'}: nothing will be "
                  f"decided; connect the bundle's sensor to {self.settings.port}, or install a bundle for this "
                  f"device", file=sys.stderr, flush=True)
            return
        rate = self.manifest["preprocessing"].get("rate_hz")
        channel = self.settings.channel_index
        if self.kind == "vibration" and msg.channels <= channel:
            self.counts["hello_mismatch"] += 1
            print(f"runtime: the device {msg.device_id!r} streams {msg.channels} axes, so --channel {channel} does "
                  f"not exist: no window will be decided; give --channel 0 to {msg.channels - 1} (the axis the "
                  f"model was trained on)", file=sys.stderr, flush=True)
        if self.kind == "vibration" and rate and abs(msg.rate_hz - rate) > 1e-3 * rate:
            # Windows are cut on the model's clock: at another rate no window completes, and any
            # decision would be meaningless.
            self.counts["hello_mismatch"] += 1
            print(f"runtime: the device {msg.device_id!r} streams at {msg.rate_hz:g} Hz, but the bundle's model "
                  f"was trained at {rate:g} Hz: no window will be decided; set the device to {rate:g} Hz or "
                  f"install a bundle trained at {msg.rate_hz:g} Hz", file=sys.stderr, flush=True)
        if self.kind == "linescan" and msg.pixels and not self.assembler.fits(msg.pixels):
            self.counts["hello_mismatch"] += 1
            patches = f"{self.settings.lanes} patches" if self.settings.lanes else "one patch"
            print(f"runtime: the device {msg.device_id!r} sends lines of {msg.pixels} px, too narrow for {patches} "
                  f"of the model's {self.assembler.patch_width or '?'} px: "
                  "no tile will be decided (its lines are counted as assembler_lines_unusable); check --lanes, or "
                  "install a bundle for this detector", file=sys.stderr, flush=True)
        travel_s = self.settings.distance / msg.rate_hz if self.kind == "linescan" and msg.rate_hz > 0 else None
        if travel_s is not None and 0 < travel_s <= self.budget_s:
            # A tile decided within its budget may still be decided after its parts reach the actuator.
            print(f"runtime: warning: the actuator is {self.settings.distance} lines downstream, "
                  f"{travel_s * 1e3:.1f} ms of travel at the device's {msg.rate_hz:g} lines/s, no more than the "
                  f"{self.budget_s * 1e3:g} ms budget: a tile decided late in its budget fires its REJECTs after "
                  f"its parts have passed (the device answers TOO_LATE, counted as naks_too_late); check --distance "
                  f"or lower --budget-ms", file=sys.stderr, flush=True)

    # -- decider ----------------------------------------------------------------------------
    def _prepare(self, unit: Unit) -> np.ndarray:
        """The unit as the network's input: one window (1, C, L), or a tile's patches (lanes, 1, H, W)."""
        if self.kind == "vibration":
            return model_input(unit.data, self.normalization)  # the window (1, L): one window's channels
        return tile_input(unit.data, self.normalization)

    def _batch_size(self) -> int:
        """Inputs per inference: 1 window, or the patches of one tile (expected from the detector width)."""
        if self.kind == "vibration":
            return 1
        width = self.manifest["preprocessing"].get("patch_width")
        return self.settings.lanes or (max(1, self.settings.pixels // width) if width else 1)

    def _idle_input(self) -> np.ndarray:
        return np.zeros((self._batch_size(), *self.backend.input_shape), np.float32)

    def _finish_tile(self, unit: Unit, verdicts: list[Verdict], wait_ms: float | None = None,
                     inference_ms: float | None = None, decided_from: float | None = None) -> None:
        """Number, send and count the decisions of one unit (one per patch of a tile), then log them.

        Called by the decider (which passes how long the unit waited for it and how long
        inference took, logged with each decision, and when it began deciding), or by the
        reader when shedding.  The unit's REJECTs go out in one port write (one system call
        for a tile, not one per defective patch) before the disk is touched; the unit's rows
        are then committed together.  They share one latency: the moment that write ended.
        The ``decide_write_log`` stage runs from ``decided_from`` (default: now).
        """
        with self._finish_lock:
            t0 = time.perf_counter() if decided_from is None else decided_from
            lanes = range(unit.lanes)  # a vibration window is lane 0
            numbered = [self._number(unit, lane, verdict) for lane, verdict in zip(lanes, verdicts)]
            now = time.monotonic()
            flights = [InFlight(decision_id, command, now, encoder_epoch=unit.encoder_epoch)
                       for decision_id, command, _ in numbered if command]
            sent, dropped = "sent", []
            if flights:
                written, dropped = self._write_or_keep(flights, [replace(f, written=False) for f in flights])
                sent = "sent" if written else "not_written"
                self.counts[f"rejects_{sent}"] += len(flights)
            latency_ms = (time.monotonic() - unit.arrived) * 1e3
            rows = [self._row(unit, lane, verdict, decision_id, command, held or (sent if command else None),
                              latency_ms, wait_ms, inference_ms)
                    for lane, verdict, (decision_id, command, held) in zip(lanes, verdicts, numbered)]
            self._count(verdicts, latency_ms)
            self.log.append(rows)
            span = f"{unit.start}-{unit.end}"
            self.metrics.observe([{"decision_id": row.decision_id, "span": span, "lane": row.lane,
                                   "class": row.label, "reject": row.reject,
                                   "reject_command": row.reject_command, "latency_ms": latency_ms}
                                  for row in rows], latency_ms, timed=unit.seen)
            self.metrics.stages["decide_write_log"].observe((time.perf_counter() - t0) * 1e3)
            self._say_lockouts(numbered)
        self._give_up(dropped)  # marks rows: outside the lock

    def _decide_loop(self) -> None:
        last_beat = float("-inf")
        while not self._stop.is_set():
            # systemd's watchdog hears from the decider whether data flows or not: a line that
            # stops for a break must not get a healthy service killed.
            if time.monotonic() - last_beat >= 1.0:
                sd_notify("WATCHDOG=1")
                last_beat = time.monotonic()
            unit = self._next_unit()
            if unit is None:
                self._timed_infer(self._idle_input())
                self.counts["keepalives"] += 1
                continue
            self.metrics.queue_depth.set(self._queue.qsize())
            age = time.monotonic() - unit.arrived
            if not unit.seen:  # belt lost in a gap: nothing to infer
                self._finish_tile(unit, self._fail_safe(unit, "gap"), age * 1e3)
                continue
            if self.kind == "vibration" and self._without_signal(unit):
                self._finish_tile(unit, self._fail_safe(unit, "no_signal"), age * 1e3)
                continue
            if age + self._infer_times.expected() > self.budget_s:
                self._finish_tile(unit, self._fail_safe(unit, "deadline"), age * 1e3)
                self._probe_if_stale()
                continue
            t0 = time.perf_counter()
            x = self._prepare(unit)
            self.metrics.stages["preprocess"].observe((time.perf_counter() - t0) * 1e3)
            logits, inference_ms = self._timed_infer(x)
            t0 = time.perf_counter()
            self._finish_tile(unit, self.policy.decide(logits), age * 1e3, inference_ms, decided_from=t0)

    def _fail_safe(self, unit: Unit, why: str) -> list[Verdict]:
        """The fail-safe verdict for each of a unit's lanes (one for a vibration window), given for ``why``;
        belt lost in a gap gets it as ``gap`` whichever way it comes (the decider, shedding, the stop)."""
        return [self.policy.fail_safe(why if unit.seen else "gap")] * unit.lanes

    def _next_unit(self) -> Unit | None:
        """The next unit to decide: one the reader queued, else a tile of belt lost in a gap.  A long outage
        leaves hundreds of those (as many as fit between scanner and actuator); given the fail-safe all at
        once, they held up the tiles that followed it past their budget.  Each waits instead until no tile
        does, soonest at the actuator first: one is about a millisecond, a tile's lines take tens.  It also
        waits while the device is behind with REJECTs (:meth:`_unseen_may_go`).  None after a keep-alive
        interval with nothing to decide."""
        until = time.monotonic() + self.settings.keepalive_s
        while self._unseen and not self._stop.is_set():
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                pass
            if self._unseen_may_go(self._unseen[0]):
                return self._unseen.popleft()
            if (left := until - time.monotonic()) <= 0:
                return None
            try:
                return self._queue.get(timeout=min(UNSEEN_POLL_S, left))
            except queue.Empty:
                continue
        try:
            return self._queue.get(timeout=max(0.0, until - time.monotonic()))
        except queue.Empty:
            return None

    def _unseen_may_go(self, unit: Unit) -> bool:
        """Whether the fail-safe of a tile of lost belt may be given now.  Each of its REJECTs (every lane) is
        a frame the device must read; after a long outage there are thousands, and written as fast as the
        decider gives them they fill the link's buffer, so the REJECTs of a tile scanned meanwhile wait
        behind them.  So they go while fewer than ``UNSEEN_REJECTS_IN_FLIGHT`` REJECTs await the device's
        answer; once the tile's part is within ``UNSEEN_DUE_S`` of the actuator, while fewer than
        ``UNSEEN_NEAR_REJECTS_IN_FLIGHT`` do; within ``UNSEEN_LAST_S``, whatever the backlog (a tile of an
        encoder count before the device restarted sends none: it goes at once)."""
        in_flight = len(self.rejects_in_flight)
        if in_flight < UNSEEN_REJECTS_IN_FLIGHT or unit.encoder_epoch != self.assembler.encoder_epoch:
            return True
        scanner, hello = self.assembler.latest_encoder, self._latest_device  # the line rate
        if scanner is None or hello is None or hello.rate_hz <= 0:
            return True
        to_actuator = (unit.end + self.settings.distance - scanner) / hello.rate_hz
        return to_actuator < UNSEEN_LAST_S or (to_actuator < UNSEEN_DUE_S and in_flight < UNSEEN_NEAR_REJECTS_IN_FLIGHT)

    def _without_signal(self, unit: Unit) -> bool:
        """True for a window of one constant value: no running machine gives one, a dead accelerometer, a
        broken cable or a stuck converter does.  The model would still name a class for it (z-scored, it is
        all zeros), so it gets the fail-safe instead, and the operator hears when the spell starts and ends."""
        flat = bool(unit.data.max() == unit.data.min())
        if flat != self._signal_lost:
            self._signal_lost = flat
            print(f"runtime: axis {self.settings.channel_index} of the device on {self.settings.port} "
                  + (f"reads one constant value ({float(unit.data.flat[0]):g}) over a whole window: is the "
                     "accelerometer connected? Such windows get the fail-safe (no_signal_fail_safe)" if flat else
                     "vibrates again; its windows are decided by the model"), file=sys.stderr, flush=True)
        return flat

    def _probe_if_stale(self) -> None:
        """Re-measure the backend once per keep-alive interval while units fail on the estimate alone.

        Failing a unit before inference adds no measurement, and a busy stream leaves no idle
        time for keep-alives: a slow spell that lifted the estimate over the budget would
        otherwise fail every later unit, long after the spell ended.  The unit is already
        answered; the probe only delays the next fail-safe by one inference.
        """
        if time.perf_counter() - self._last_inference > self.settings.keepalive_s:
            self._timed_infer(self._idle_input())
            self.counts["estimate_probes"] += 1

    def _timed_infer(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """The backend's logits for ``x``, and how long the call took (ms)."""
        t0 = time.perf_counter()
        logits = self.backend.infer(x)
        self._last_inference = time.perf_counter()
        elapsed = self._last_inference - t0
        self._infer_times.add(elapsed)
        self.metrics.stages["inference"].observe(elapsed * 1e3)
        return logits, elapsed * 1e3

    def _number(self, unit: Unit, lane: int, verdict: Verdict) -> tuple[int, Reject | None, str | None]:
        """Number one decision and schedule its REJECT: (decision id, the REJECT to send or None, why a reject
        sends none: ``lockout``, ``untimed``, or ``passed`` for belt lost in a gap that is past the actuator)."""
        decision_id = self._next_id
        self._next_id += 1
        if unit.passed:  # nothing can fire for it, and it must not count toward a lane's lockout
            self.counts["rejects_passed"] += verdict.reject
            return decision_id, None, "passed" if verdict.reject else None
        command = self.scheduler.command(decision_id, verdict, unit.end, lane, self.policy.reason(verdict))
        if verdict.reject and command is None:
            self.counts["lockouts"] += 1
            return decision_id, None, "lockout"
        if command is not None and self._untimed(unit.encoder_epoch):
            return decision_id, None, "untimed"
        return decision_id, command, None

    def _say_lockouts(self, numbered: list[tuple[int, Reject | None, str | None]]) -> None:
        """Tell the journal which lanes' lockouts began to hold REJECTs in this unit: their parts pass unchecked
        from now until the lane decides a pass."""
        lanes = [lane for lane, (_, _, held) in enumerate(numbered)
                 if held == "lockout" and self.scheduler.tripped(lane)]
        if not lanes:
            return
        where = "the model" if self.kind == "vibration" else \
            f"lane{'s' if len(lanes) > 1 else ''} {', '.join(map(str, lanes))}"
        print(f"runtime: {where} rejected {self.settings.max_consecutive} in a row: the lockout holds further "
              f"REJECTs until a pass (counted as lockouts, logged as reject_command 'lockout'); check the sensor "
              f"and the model", file=sys.stderr, flush=True)

    def _untimed(self, encoder_epoch: int) -> bool:
        """True for a REJECT of a tile scanned before the device's encoder count began again (a restart),
        whether still to be sent or to be sent again: it names a count of the old numbering, so it would fire
        at whatever part reaches that count on the new one.  Not sent, counted as ``rejects_untimed`` (the
        caller logs it so), and said once a restart."""
        epoch = self.assembler.encoder_epoch if self.kind == "linescan" else 0
        if encoder_epoch == epoch:
            return False
        self.counts["rejects_untimed"] += 1
        if self._untimed_said != epoch:
            self._untimed_said = epoch
            print("runtime: REJECTs of tiles scanned before the device restarted cannot be timed on its new encoder "
                  "count: they are not sent, nor sent again (counted as rejects_untimed, logged as 'untimed'); "
                  "their parts pass unchecked", file=sys.stderr, flush=True)
        return True

    def _count(self, verdicts: list[Verdict], latency_ms: float) -> None:
        """Count a unit's decisions by outcome (fail-safes by reason: ``deadline_fail_safe``, ...), and those
        decided by the model after the budget."""
        outcomes = {"pass": 0, "reject": 0, "fail_safe": 0}
        for verdict in verdicts:
            if verdict.fail_safe:
                outcomes["fail_safe"] += 1
                self.counts[f"{verdict.fail_safe}_fail_safe"] += 1
                self.metrics.fail_safe.labels(verdict.fail_safe).inc()
            else:
                outcomes["reject" if verdict.reject else "pass"] += 1
        for outcome, count in outcomes.items():
            if count:
                self.metrics.outcomes[outcome].inc(count)
        if latency_ms > self.budget_s * 1e3:
            self.counts["late_decisions"] += outcomes["pass"] + outcomes["reject"]

    def _row(self, unit: Unit, lane: int, verdict: Verdict, decision_id: int, command: Reject | None,
             reject_command: str | None, latency_ms: float, wait_ms: float | None,
             inference_ms: float | None) -> DecisionRow:
        """One decision's log row; ``reject_command`` says what became of a reject's REJECT (NOT_FIRED_WHY)."""
        return DecisionRow(decision_id, time.time(), self.kind, unit.start, unit.end, unit.device_time_us, lane,
                           verdict.label, verdict.scores, verdict.reject, verdict.fail_safe, latency_ms,
                           command.at if command is not None and self.kind == "linescan" else None, self.sha256,
                           wait_ms, inference_ms, reject_command)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Warm up the backend, then open the port and ask the device to identify itself.

        Warm-up comes first: the first inferences are the slowest, and no data should
        wait behind them.
        """
        if self._started:
            return
        self.backend.warm_up(self.settings.warmup, batch=self._batch_size())
        for _ in range(16):  # seed the inference-time estimate
            self._timed_infer(self._idle_input())
        gc.collect()
        gc.freeze()  # what start-up allocated is never scanned again: shorter collector pauses
        self._ask_hello()
        self._started = True
        sd_notify("READY=1")

    def run(self, duration: float | None = None) -> dict:
        """Decide until ``stop()`` (SIGTERM) or ``duration`` seconds; returns the summary."""
        self.start()
        reader = threading.Thread(target=self._timed_thread, args=("reader", self._read_loop), name="reader",
                                  daemon=True)
        decider = threading.Thread(target=self._timed_thread, args=("decider", self._decide_loop), name="decider",
                                   daemon=True)
        started = time.monotonic()
        reader.start()
        decider.start()
        try:
            while not self._stop.is_set() and (duration is None or time.monotonic() - started < duration):
                self._stop.wait(0.1)
        finally:
            sd_notify("STOPPING=1")  # systemd hears that the shutdown begins, not only once it is over
            self._wind_down(reader, decider)
        return self.summary(time.monotonic() - started)

    def _wind_down(self, reader: threading.Thread, decider: threading.Thread) -> None:
        """Stop in the order that loses nothing.  The decider ends (on its next unit: the reader goes on
        queueing until then, so it does not wait out a keep-alive while data comes); then the reader queues
        no more units (what it reads from then is counted as ``frames_after_stop``); units still queued get
        the shutdown fail-safe (tiles of belt lost in a gap, their own); the reader hears the device's answers
        to the last REJECTs, sending again those unanswered, for as long as the ledger gives them; then it
        ends, and a REJECT still unanswered is logged so.  Stopping both threads at once left the last REJECTs
        logged as sent, whether or not the device ever took them."""
        self._stop.set()
        decider.join(timeout=2)
        self._stop_queueing.set()
        if reader.is_alive():
            self._reader_closing.wait(timeout=2)
        left = []
        while True:
            try:
                left.append(self._queue.get_nowait())
            except queue.Empty:
                break
        left += self._unseen  # the reader queues no more: nothing is added to either meanwhile
        self._unseen.clear()
        for unit in left:
            self._finish_tile(unit, self._fail_safe(unit, "shutdown"))
        settled_by = time.monotonic() + self.rejects_in_flight.settle_s() + 0.05
        while reader.is_alive() and len(self.rejects_in_flight) and time.monotonic() < settled_by:
            self._stop_reading.wait(0.01)
        self._stop_reading.set()
        reader.join(timeout=2)
        self._give_up(self.rejects_in_flight.give_up_all())
        self._give_up(self.awaiting_device.take_all())

    def _timed_thread(self, name: str, loop) -> None:
        """Run one of the runtime's threads and keep its CPU time (where the runtime's CPU goes).

        A thread that dies of an unexpected error stops the whole runtime, loudly: a runtime
        without its reader or decider must not go on looking alive.  The error is printed and
        kept in the summary, and ``drsn-edge run`` exits non-zero (systemd restarts the service).
        """
        try:
            self._enter_realtime(name)
            loop()
        except Exception:  # noqa: BLE001 - any bug here must stop the runtime, not a thread of it
            self.thread_failures.append(name)
            print(f"runtime: the {name} thread failed; stopping", file=sys.stderr, flush=True)
            traceback.print_exc()
            self._stop.set()
        finally:
            self.thread_cpu_s[name] = time.thread_time()

    def _enter_realtime(self, name: str) -> None:
        """Raise the calling runtime thread to the configured real-time priority, or say loudly why not."""
        if self.settings.realtime_priority:
            refused = enter_realtime(self.settings.realtime_priority)
            if refused:
                print(f"runtime: the {name} thread runs at ordinary priority: {refused}", file=sys.stderr, flush=True)
        self.thread_priority[name] = current_priority()

    def stop(self) -> None:
        self._stop.set()

    def stage_seconds(self) -> dict[str, float]:
        """Total time spent per stage, in seconds (inference includes keep-alives and warm-up seeding)."""
        get = self.metrics.registry.get_sample_value
        return {stage: (get("drsn_stage_ms_sum", {"stage": stage}) or 0.0) / 1e3
                for stage in STAGES}

    def overhead_fraction(self) -> float | None:
        """Time in every stage but inference, as a fraction of inference time (stage clocks)."""
        stages = self.stage_seconds()
        inference = stages.pop("inference")
        return sum(stages.values()) / inference if inference else None

    def summary(self, seconds: float) -> dict:
        return {"seconds": round(seconds, 2), "budget_ms": self.budget_s * 1e3, "stages_s": self.stage_seconds(),
                "overhead_fraction_of_inference": self.overhead_fraction(),
                "latency": self.metrics.latency_summary(), "counters": self.counters(),
                "thread_cpu_s": dict(self.thread_cpu_s), "thread_failures": list(self.thread_failures),
                "thread_priority": dict(self.thread_priority),
                "device": self.device_hello.device_id if self.device_hello else None}

    def close(self) -> None:
        self.log.close()
        self.port.close()
        if self.server:
            self.server.close()
