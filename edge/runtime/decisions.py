"""From logits to a decision, and from a reject decision to a timed REJECT command.

Everything comes from the bundle manifest or the operator's settings, never from code
defaults: classes, which classes reject, an optional confidence threshold, the
fail-safe on a missed deadline, the scanner-to-actuator distance and the lockout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.errors import DrsnEdgeError
from firmware_bridge.protocol import Reject, RejectMode

FAIL_SAFE = ("reject", "pass", "hold")
REASON_FAIL_SAFE = 0xFFFF   # reason code of a REJECT sent because no decision was possible in time


class PolicyError(DrsnEdgeError, ValueError):
    """A decision setting (reject classes, threshold, fail-safe) the bundle cannot take."""


@dataclass
class Verdict:
    label: str
    scores: list[float]
    reject: bool
    fail_safe: str | None = None   # None for a model decision; else why the fail-safe was applied


class DecisionPolicy:
    """Softmax, argmax, reject classes and threshold; the fail-safe for units not decided in time."""

    def __init__(self, classes: list[str], reject_classes: list[str], threshold: float | None = None,
                 on_miss: str = "reject"):
        unknown = sorted(set(reject_classes) - set(classes))
        if unknown:
            raise PolicyError(f"reject classes {unknown} are not among the bundle's classes {classes}")
        if on_miss not in FAIL_SAFE:
            raise PolicyError(f"on-miss must be one of {', '.join(FAIL_SAFE)}, got {on_miss!r}")
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise PolicyError(f"threshold must be in (0, 1], got {threshold}")
        self.classes = classes
        self.reject_index = np.array([c in reject_classes for c in classes])
        self.threshold = threshold
        self.on_miss = on_miss

    @classmethod
    def for_bundle(cls, manifest: dict, reject_classes: list[str] | None = None, threshold: float | None = None,
                   on_miss: str | None = None) -> "DecisionPolicy":
        """The bundle's policy, with the operator's settings where given."""
        return cls(manifest["classes"], reject_classes or manifest["reject_classes"],
                   threshold if threshold is not None else manifest["runtime"].get("threshold"),
                   on_miss or manifest["runtime"]["on_miss"])

    def decide(self, logits: np.ndarray) -> list[Verdict]:
        """One verdict per row of ``logits`` (a window, or each patch of a tile), worked out for all rows at once."""
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        best = p.argmax(axis=1)
        if self.threshold is None:
            reject = self.reject_index[best]
        else:  # reject when the total probability of the reject classes reaches the threshold
            reject = p[:, self.reject_index].sum(axis=1).astype(np.float64) >= self.threshold
        # NaN scores (an input that overflowed) would still argmax to a class: the fail-safe instead.
        finite = np.isfinite(p).all(axis=1).tolist()
        return [Verdict(self.classes[k], scores, r) if ok else self.fail_safe("non_finite")
                for k, scores, r, ok in zip(best.tolist(), p.tolist(), reject.tolist(), finite)]

    def reason(self, verdict: Verdict) -> int:
        """The reason code a verdict's REJECT carries: its class's index, or ``REASON_FAIL_SAFE``."""
        return REASON_FAIL_SAFE if verdict.fail_safe else self.classes.index(verdict.label)

    def fail_safe(self, why: str) -> Verdict:
        return Verdict(f"fail-safe:{self.on_miss}", [], self.on_miss == "reject", fail_safe=why)


def settings_problem(kind: str, distance: int, channel: int = 0) -> str | None:
    """Why a runtime of this kind cannot work as set (None: it can).  A line-scan runtime without a
    scanner-to-actuator distance cannot fire a REJECT in time; a setting only the other kind reads
    would be ignored, leaving the operator to believe it holds."""
    if kind == "linescan" and distance <= 0:
        return ("a line-scan bundle needs --distance, the encoder counts from the scanner to the actuator: with "
                f"{distance}, every REJECT names a line that has passed the actuator by the time its tile is decided, "
                "and the device answers TOO_LATE")
    if kind == "vibration" and distance > 0:
        return (f"--distance {distance} is for line-scan bundles (encoder counts from scanner to actuator); a "
                "vibration bundle's REJECT is an alarm sent as soon as its window is decided: leave it out")
    if kind == "linescan" and channel > 0:
        return (f"--channel {channel} picks an accelerometer axis for a vibration bundle; a line-scan bundle reads "
                "the detector's lines: leave it out")
    return None


class RejectScheduler:
    """Turns reject verdicts into REJECT messages, with a lockout against an actuator firing non-stop.

    Line-scan: fire when the tile's last line reaches the actuator, ``distance`` encoder
    counts downstream of the scanner.  Vibration: an alarm right away (``AFTER_US`` 0).
    ``max_consecutive`` rejects in a row on one lane (one actuator: lane k of every tile,
    or the vibration alarm) trip that lane's lockout: its further rejects are held
    (counted, logged) until it decides a pass, so a faulty model or sensor cannot empty
    the line.  Rejects side by side on other lanes (one wide defect) do not count.
    0 disables the lockout.
    """

    def __init__(self, kind: str, distance: int = 0, max_consecutive: int = 0):
        self.kind, self.distance, self.max_consecutive = kind, distance, max_consecutive
        self.consecutive: dict[int, int] = {}  # lane -> rejects in a row

    def command(self, decision_id: int, verdict: Verdict, span_end: int, lane: int, reason: int) -> Reject | None:
        if not verdict.reject:
            self.consecutive[lane] = 0
            return None
        self.consecutive[lane] = self.consecutive.get(lane, 0) + 1
        if self.max_consecutive and self.consecutive[lane] > self.max_consecutive:
            return None
        if self.kind == "linescan":
            return Reject(decision_id % (1 << 32), RejectMode.AT_ENCODER, lane, reason, span_end + self.distance)
        return Reject(decision_id % (1 << 32), RejectMode.AFTER_US, lane, reason, 0)

    def tripped(self, lane: int) -> bool:
        """True when the lane's latest reject was the first its lockout held."""
        return bool(self.max_consecutive) and self.consecutive.get(lane, 0) == self.max_consecutive + 1
