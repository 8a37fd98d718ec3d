"""REJECTs in flight: each awaits the device's ACK or NAK; one left unanswered is sent again, then given up.

A REJECT corrupted on the wire is dropped by the device, which cannot answer what it
could not read; without an answer the gateway cannot tell it from one that will fire.
So every REJECT written is remembered under its frame's sequence number until the
device answers.  One unanswered for ``ANSWER_TIMEOUT_S`` is due: it is sent again (same
decision id, a new sequence number; a device that already holds that decision answers
ACK and fires once), up to ``SENDS`` sends in all, then given up, and its decision
logged as ``unanswered``.  A REJECT the device answers BUSY (its queue is full) is due
again after the timeout too, within the same number of sends.  The timeout is far above
a device's answer (a millisecond or two over USB or a UART) and far below a belt's travel
from scanner to actuator (hundreds of milliseconds), so a lost REJECT is usually sent
again in time for its part.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from firmware_bridge.codec import SEQ_MOD
from firmware_bridge.protocol import Reject

#: Seconds without an answer after which a REJECT is sent again (or given up).
ANSWER_TIMEOUT_S = 0.1
#: Sends of one REJECT in all, the first included.
SENDS = 3
#: Seconds after a decision is logged by which what became of its REJECT is known (its row marked too late,
#: refused or unanswered): the sends above, and the reader's passes between them, with room to spare.
FATE_KNOWN_WITHIN_S = 1.0
#: Seconds a line-scan REJECT decided while the device was gone is kept, to be written once it is back; and how
#: many at most.  A belt's scanner-to-actuator travel is a second or two: one kept longer has passed its part.
AWAIT_DEVICE_S = 30.0
AWAIT_DEVICE_MAX = 10_000


@dataclass
class InFlight:
    """One REJECT written to the device, not yet answered."""

    decision_id: int
    command: Reject
    sent_at: float   # time.monotonic() of its latest send
    sends: int = 1
    encoder_epoch: int = 0  # the run of the device's encoder count its firing count belongs to (line-scan)
    written: bool = True    # False: decided while the device was gone, and not yet written


class RejectLedger:
    """REJECTs in flight by sequence number, oldest first; safe to use from the decider and the reader."""

    def __init__(self, timeout_s: float = ANSWER_TIMEOUT_S, sends: int = SENDS):
        self.timeout_s, self.sends = timeout_s, sends
        self._lock = threading.Lock()
        self._by_seq: dict[int, InFlight] = {}  # insertion order is send order: the oldest first

    def sent(self, first_seq: int, flights: list[InFlight]) -> None:
        """``flights`` are written in one write, numbered on from ``first_seq``."""
        with self._lock:
            for k, flight in enumerate(flights):
                self._by_seq[(first_seq + k) % SEQ_MOD] = flight

    def forget(self, first_seq: int, count: int) -> None:
        """The ``count`` flights numbered on from ``first_seq`` were not written after all."""
        with self._lock:
            for k in range(count):
                self._by_seq.pop((first_seq + k) % SEQ_MOD, None)

    def answered(self, seq: int) -> InFlight | None:
        """The REJECT the device answered (ACK or NAK) under ``seq``; None for one no longer in flight (sent
        again meanwhile, or given up)."""
        with self._lock:
            return self._by_seq.pop(seq, None)

    def due(self, now: float) -> tuple[list[InFlight], list[InFlight]]:
        """REJECTs unanswered for the timeout, taken out of the ledger: (to send again, to give up)."""
        with self._lock:
            expired = []
            for seq, flight in self._by_seq.items():
                if now - flight.sent_at < self.timeout_s:
                    break
                expired.append(seq)
            flights = [self._by_seq.pop(seq) for seq in expired]
        return [f for f in flights if f.sends < self.sends], [f for f in flights if f.sends >= self.sends]

    def settle_s(self) -> float:
        """Seconds after its first send by which every REJECT is answered or given up."""
        return self.timeout_s * self.sends

    def give_up_all(self) -> list[InFlight]:
        """Every REJECT still in flight, taken out of the ledger (the runtime stops hearing the device)."""
        with self._lock:
            flights = list(self._by_seq.values())
            self._by_seq.clear()
        return flights

    def __len__(self) -> int:
        return len(self._by_seq)


class AwaitingDevice:
    """Line-scan REJECTs the device could not be given because it was gone (a USB link that dropped), to
    write once it is back: those decided during the outage, and those written before it whose answer
    never came and could not be sent again.

    A line-scan REJECT names the encoder count at which its part reaches the actuator, and the
    device answers TOO_LATE for a part already past, so one decided during a short outage can
    still fire for its own part; a device that already holds one sent before answers ACK and
    fires it once.  Each is kept ``AWAIT_DEVICE_S`` at most, and the latest ``AWAIT_DEVICE_MAX``:
    memory stays flat through a long outage, and a REJECT from long ago is never written to a
    device that may have counted its encoder anew meanwhile.  Those dropped are handed back to
    the caller, who logs what became of them.  Safe to use from the decider and the reader.
    """

    def __init__(self, keep_s: float = AWAIT_DEVICE_S, most: int = AWAIT_DEVICE_MAX):
        self.keep_s, self.most = keep_s, most
        self._lock = threading.Lock()
        self._kept: deque[tuple[int, InFlight]] = deque()  # (reconnects when kept, REJECT), oldest first

    def add(self, flights: list[InFlight], reconnects: int) -> list[InFlight]:
        """REJECTs whose write failed, the device gone; ``sent_at`` is when they were decided or last sent,
        ``reconnects`` how many times the port had come back by then.  Returns the oldest ones pushed out by
        the limit."""
        with self._lock:
            self._kept.extend((reconnects, flight) for flight in flights)
            return [self._kept.popleft()[1] for _ in range(len(self._kept) - self.most)]

    def take(self, now: float, reconnects: int) -> tuple[list[InFlight], list[InFlight]]:
        """(REJECTs kept before the port's latest return, ``reconnects``, and young enough to write; those too
        old to write), both oldest first, taken out; those kept since the return stay."""
        with self._lock:
            kept = list(self._kept)
            self._kept.clear()
            young = [(n, f) for n, f in kept if now - f.sent_at <= self.keep_s]
            self._kept.extend((n, f) for n, f in young if n >= reconnects)
        return [f for n, f in young if n < reconnects], [f for n, f in kept if now - f.sent_at > self.keep_s]

    def take_all(self) -> list[InFlight]:
        """Every REJECT still kept, taken out (the runtime stops)."""
        with self._lock:
            flights = [f for _, f in self._kept]
            self._kept.clear()
        return flights

    def __len__(self) -> int:
        return len(self._kept)
