"""Serial links through pyserial: device paths, ``loop://``, ``socket://``, pty pairs, USB discovery.

:class:`ReconnectingPort` keeps the process alive when the device disappears (a USB
unplug, a closed pty, a dropped TCP peer): it closes, counts the outage and reopens
the same name until the device is back.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import tty
from dataclasses import asdict, dataclass
from pathlib import Path

import serial
from serial.tools import list_ports

DEFAULT_BAUD = 921600
USB_PREFIX = "usb:"
#: A read woken with nothing to read is taken for a device that is gone only when such wake-ups go on, with
#: nothing read between them, for this long.  Another program reading the same port (ModemManager probing a
#: ttyACM device, an engineer's `cat`) takes bytes from under the gateway's read, which then wakes to find
#: nothing; a device that is gone wakes every read at once, for good.
EMPTY_WAKEUPS_GONE_S = 0.1


class PortError(OSError):
    """A port that cannot be found or opened, with what to try instead."""


def parse_vid_pid(text: str) -> tuple[int, int | None]:
    """``"0483:5740"`` or ``"0483"`` (hex) into (vid, pid or None)."""
    parts = text.split(":")
    try:
        vid = int(parts[0], 16)
        pid = int(parts[1], 16) if len(parts) > 1 and parts[1] else None
    except ValueError:
        raise PortError(f"USB id {text!r} must be VID[:PID] in hex, e.g. 0483:5740") from None
    return vid, pid


def find_usb_ports(vid: int, pid: int | None = None, serial_number: str | None = None) -> list:
    """USB CDC ports matching VID[:PID] (and serial number), as ``serial.tools.list_ports`` sees them."""
    return sorted((p for p in list_ports.comports()
                   if p.vid == vid and (pid is None or p.pid == pid)
                   and (serial_number is None or p.serial_number == serial_number)),
                  key=lambda p: p.device)


def resolve_port(spec: str) -> str:
    """A pyserial URL or device path; ``usb:VID:PID[:SERIAL]`` is looked up among connected devices."""
    if not spec.startswith(USB_PREFIX):
        return spec
    fields = spec[len(USB_PREFIX):].split(":")
    vid, pid = parse_vid_pid(":".join(fields[:2]))
    serial_number = fields[2] if len(fields) > 2 else None
    found = find_usb_ports(vid, pid, serial_number)
    if not found:
        seen = ", ".join(f"{p.device} ({p.vid:04x}:{p.pid:04x})" for p in list_ports.comports() if p.vid) or "none"
        raise PortError(f"no USB serial device {spec[len(USB_PREFIX):]} connected (USB serial devices seen: {seen})")
    return found[0].device


def open_port(spec: str, baudrate: int = DEFAULT_BAUD, timeout: float = 0.05,
              write_timeout: float | None = 0.1) -> serial.SerialBase:
    """Open a device path, ``usb:VID:PID``, ``loop://``, ``socket://HOST:PORT`` or a pty by name.

    A device is opened exclusively: two readers would each get part of its frames, so a
    second one (a runtime started by hand beside the service) is refused and told why.
    """
    url = resolve_port(spec)
    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout, write_timeout=write_timeout,
                                     exclusive=True)
    except (serial.SerialException, ValueError, OSError) as exc:
        if "exclusively lock" in str(exc):
            raise PortError(f"{spec} is in use by another process (another drsn-edge run, or the installed "
                            "service: systemctl stop drsn-edge)") from exc
        raise PortError(f"cannot open {spec}: {exc}") from exc


class PtyPair:
    """A pseudo-terminal: the simulator holds ``master_fd``; clients open ``name`` like a serial device.

    ``link`` (optional) is a stable path kept pointing at the current slave, as
    ``/dev/serial/by-id/...`` does for a USB device across unplug and replug.
    """

    def __init__(self, link: str | Path | None = None):
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)
        self.name = os.ttyname(self.slave_fd)
        self.link = Path(link) if link else None
        if self.link:
            tmp = self.link.with_name(self.link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.name)
            tmp.replace(self.link)

    @property
    def port(self) -> str:
        return str(self.link) if self.link else self.name

    def close(self) -> None:
        for fd in (self.master_fd, self.slave_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master_fd = self.slave_fd = -1


@dataclass
class LinkStats:
    opens: int = 0
    outages: int = 0             # times the device went away
    outage_seconds: float = 0.0  # total time without a device
    write_timeouts: int = 0      # writes the device did not take in time (it is there, but not reading)
    empty_wakeups: int = 0       # reads woken with nothing to read, not taken for a device gone (see above)
    last_error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class ReconnectingPort:
    """Reads and writes that survive the device going away; every outage is counted.

    ``read`` returns b"" while the device is gone (after waiting ``retry_s`` between
    attempts), so the caller's loop keeps running and can fail safe.
    ``on_reconnect`` is called after every reopen (e.g. to reset sequence tracking);
    ``on_lost(why)`` once when the device goes, or is not there at the first open.

    One thread may read while another writes.  pyserial does not survive a port closed
    under a call in another thread, so a port found gone is retired at once (the next
    call reopens) but closed by the last thread to leave it; a blocked read is woken.
    """

    def __init__(self, spec: str, baudrate: int = DEFAULT_BAUD, timeout: float = 0.05,
                 retry_s: float = 0.2, on_reconnect=None, on_lost=None):
        self.spec = spec
        self.baudrate = baudrate
        self.timeout = timeout
        self.retry_s = retry_s
        self.on_reconnect = on_reconnect
        self.on_lost = on_lost
        self.stats = LinkStats()
        self._port: serial.SerialBase | None = None
        self._down_since: float | None = None
        self._lock = threading.Lock()
        self._users: dict[serial.SerialBase, int] = {}  # calls in progress on each open port
        self._empty_since: float | None = None  # the first of the latest reads woken with nothing to read

    @property
    def connected(self) -> bool:
        return self._port is not None

    def _acquire(self, wait: bool = True) -> serial.SerialBase | None:
        """The open port (reopened if need be), counted as in use by the caller; None while the device is gone,
        after ``retry_s`` when ``wait`` (a reader's loop must not spin; a writer must not be held up).

        Counting happens under the same lock as the lookup, so no other thread can close the
        port between the two.
        """
        with self._lock:
            came_back = missing = False
            if self._port is None:
                try:
                    self._port = open_port(self.spec, self.baudrate, self.timeout)
                except PortError as exc:
                    self.stats.last_error = str(exc)
                    missing = self._down_since is None and self.stats.opens == 0  # not there from the start
                    if self._down_since is None:
                        self._down_since = time.monotonic()
                else:
                    self.stats.opens += 1
                    came_back = self._down_since is not None
                    if came_back:
                        self.stats.outage_seconds += time.monotonic() - self._down_since
                        self._down_since = None
            port = self._port
            if port is not None:
                self._users[port] = self._users.get(port, 0) + 1
        if missing and self.on_lost:
            self.on_lost(self.stats.last_error)
        if port is None:
            if wait:
                time.sleep(self.retry_s)
        elif came_back and self.on_reconnect:
            self.on_reconnect()
        return port

    def _lost(self, port: serial.SerialBase, exc: Exception) -> None:
        """``port`` failed: count one outage (once, whichever thread saw it first) and retire it."""
        with self._lock:
            if port is not self._port:
                return
            self.stats.outages += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self._down_since = time.monotonic()
            self._port = None
        _cancel_read_quietly(port)
        if self.on_lost:
            self.on_lost(self.stats.last_error)

    def _use(self, action, default, wait: bool = True):
        """``action(port)``, or ``default`` while the device is gone (a failure counts as an outage)."""
        port = self._acquire(wait)
        if port is None:
            return default
        try:
            return action(port)
        except (serial.SerialTimeoutException, queue.Full):  # queue.Full: loop://'s write timeout
            self.stats.write_timeouts += 1
            return default
        except (serial.SerialException, OSError) as exc:
            self._lost(port, exc)
            return default
        finally:
            with self._lock:
                left = self._users.pop(port) - 1
                if left:
                    self._users[port] = left
                last_out = not left and port is not self._port
            if last_out:
                _close_quietly(port)

    def read(self, size: int = 65536) -> bytes:
        """Wait (up to the timeout) for bytes, then return what has arrived; b"" while the device is gone."""
        def blocking(port) -> bytes:
            data = self._read(port, max(1, min(size, port.in_waiting or 1)))
            # A blocking read wakes on the first byte of a frame; the rest is usually there by now.
            # Taking it in the same call halves the reads (and decoder passes) per frame.
            if len(data) == 1 and size > 1 and (waiting := port.in_waiting):
                data += self._read(port, min(size - 1, waiting))
            return data
        return self._use(blocking, b"")

    def read_waiting(self, size: int = 65536) -> bytes:
        """What has already arrived, without waiting; b"" when nothing has (or the device is gone)."""
        return self._use(lambda port: self._read(port, min(size, waiting)) if (waiting := port.in_waiting) else b"",
                         b"")

    def _read(self, port: serial.SerialBase, size: int) -> bytes:
        """``port.read(size)``, where a read woken with nothing to read is an empty read (counted as
        ``empty_wakeups``) unless such reads have gone on for ``EMPTY_WAKEUPS_GONE_S``: pyserial takes every
        one for a device gone, and a reopen would cost the bytes in the kernel's buffer (pyserial flushes
        them on open) and a reconnect."""
        try:
            data = port.read(size)
        except serial.SerialException as exc:
            if "returned no data" not in str(exc):
                raise
            now = time.monotonic()
            self._empty_since = self._empty_since or now
            if now - self._empty_since >= EMPTY_WAKEUPS_GONE_S:
                self._empty_since = None
                raise
            self.stats.empty_wakeups += 1
            time.sleep(0.001)  # a device that is gone wakes the next read at once: no need to spin on it
            return b""
        self._empty_since = None
        return data

    def write(self, data: bytes) -> bool:
        """Write all of ``data``; False when the device is gone (an outage) or does not take it in time."""
        def write_all(port) -> bool:
            port.write(data)
            return True
        return self._use(write_all, False, wait=False)  # the decider's REJECT must not wait for the device

    def close(self) -> None:
        """Close the port; a call still using it in another thread is woken and closes it as it leaves."""
        with self._lock:
            port, self._port = self._port, None
            in_use = port in self._users
        if port is None:
            return
        if in_use:
            _cancel_read_quietly(port)
        else:
            port.close()


def _cancel_read_quietly(port: serial.SerialBase) -> None:
    """Wake a read blocked on ``port`` in another thread."""
    try:
        port.cancel_read()
    except Exception:  # noqa: BLE001 - not every transport can cancel; its read times out instead
        pass


def _close_quietly(port: serial.SerialBase) -> None:
    try:
        port.close()
    except Exception:  # noqa: BLE001 - the device is gone; closing may fail in any way
        pass
