"""What the device says of itself, and its silences: told to the journal (stderr) and counted.

A device reports faults (ERROR: a code and a text) and status bits in its heartbeats;
a device that hangs, or whose UART cable is cut, simply stops sending while its port
stays open; a REJECT corrupted on its way is never answered.  None of that stops the
stream's decoding, and none of it may pass unseen: the operator reads it in the
service's journal, the counters go to /metrics.
"""

from __future__ import annotations

import sys
import time

from firmware_bridge.protocol import Error

#: One kind of trouble (a device error code, unanswered REJECTs) is said at most this often (seconds); the
#: rest are counted, and said with the next.
SAY_EVERY_S = 60.0


class DeviceWatch:
    """Says and counts a device's ERRORs, the changes of its status bits, and its silences.

    Silent means no valid frame for three heartbeat intervals, the protocol's rule for a
    lost device: a device with nothing else to say answers the gateway's heartbeats.
    """

    def __init__(self, port: str, heartbeat_s: float):
        self.port = port
        self.silent_after_s = 3 * heartbeat_s
        self.counts = {"device_errors": 0, "device_status": 0, "device_silences": 0, "rejects_unanswered": 0}
        self._said: dict[object, tuple[float, int]] = {}  # kind of trouble -> (when last said, times since)
        self._frames_seen, self._last_frame_at = 0, time.monotonic()  # valid frames decoded; when the last came
        self._silent_since: float | None = None  # the last valid frame's time, while the device is silent
        self._empty_wakeups = 0  # the link's reads woken with nothing to read, as last seen

    def _say(self, text: str) -> None:
        print(f"runtime: the device on {self.port} {text}", file=sys.stderr, flush=True)

    def _say_now_and_then(self, kind: object, text: str) -> None:
        """Say ``text`` the first time, then at most once a minute for this ``kind``, with how often it came
        meanwhile: a device repeating one fault must not flood the journal."""
        now = time.monotonic()
        last_said, since = self._said.get(kind, (None, 0))
        if last_said is not None and now - last_said < SAY_EVERY_S:
            self._said[kind] = (last_said, since + 1)
            return
        self._said[kind] = (now, 0)
        self._say(text + (f" (and {since} more times since it was last said)" if since else ""))

    def error(self, msg: Error) -> None:
        """A fault the device reports: its code and text."""
        self.counts["device_errors"] += 1
        text = "".join(ch if ch.isprintable() else "?" for ch in msg.text)  # one journal line, whatever it sent
        self._say_now_and_then(msg.code, f"reports error {msg.code}: {text} (counted as device_errors)")

    def unanswered(self, decision_id: int, sends: int) -> None:
        """A REJECT the device answered neither with ACK nor NAK, however often it was sent."""
        self.counts["rejects_unanswered"] += 1
        times = f"{sends} time{'s' if sends > 1 else ''}"
        self._say_now_and_then("unanswered", f"answered no REJECT of decision {decision_id}, sent {times}: "
                                             "its part may have passed unrejected (counted as rejects_unanswered, "
                                             "logged as reject_command 'unanswered')")

    def woke_empty(self, count: int) -> None:
        """The link's count of reads woken with nothing to read (``link_empty_wakeups``), said when it grows:
        with frames lost, it is another program reading the port."""
        if count > self._empty_wakeups:
            self._empty_wakeups = count
            self._say_now_and_then("woke empty", f"woke the gateway's read with nothing to read ({count} times so "
                                                 "far; not taken for an unplug, counted as link_empty_wakeups): if "
                                                 "decoder_lost_frames grows with it, another program reads the "
                                                 "port too (ModemManager probes ttyACM devices: tell it to leave "
                                                 "this one alone)")

    def status(self, status: int) -> None:
        """The status bits of a heartbeat from the device (0: all well): said when they change."""
        if status != self.counts["device_status"]:
            self.counts["device_status"] = status
            self._say(f"says status bits {status:#x}" if status else "says status bits back to 0 (all well)")

    def started(self) -> None:
        """The reader starts: the time spent warming up is not the device's silence."""
        self._last_frame_at = time.monotonic()

    def watch(self, frames: int, connected: bool, now: float) -> None:
        """Called on every pass of the reader with the decoder's count of valid frames and whether the port is
        open (a port that is gone is said by the link, not here)."""
        if frames != self._frames_seen or not connected:
            if self._silent_since is not None and frames != self._frames_seen:
                self._say(f"sends again after {now - self._silent_since:.1f} s")
            self._frames_seen, self._last_frame_at, self._silent_since = frames, now, None
        elif self._silent_since is None and now - self._last_frame_at > self.silent_after_s:
            self._silent_since = self._last_frame_at
            self.counts["device_silences"] += 1
            self._say(f"sent no valid frame for {self.silent_after_s:g} s, heartbeats unanswered: is it powered, "
                      "its firmware running, its cable whole? Nothing is decided meanwhile (counted as "
                      "device_silences)")
