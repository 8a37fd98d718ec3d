"""Read a decision log without disturbing the runtime that writes it: `drsn-edge decisions`.

A plant engineer asks the log what the line asked the gateway: which parts were
rejected this morning, which windows got the fail-safe and why, which decisions came
late.  The log is opened read-only (``mode=ro``): nothing is ever written to it, and
every query is one short read transaction, so the runtime's commits and checkpoints
go on while it is read, as SQLite's WAL mode allows.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from itertools import takewhile
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from edge.bundle.install import SERVICE_LOG
from edge.runtime.decision_log import COLUMNS, DecisionLogError, file_identity, is_damaged
from edge.runtime.metrics import latency_percentiles
from edge.runtime.reject_ledger import FATE_KNOWN_WITHIN_S


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: float | None = None) -> float:
    """UNIX time from ``2026-12-02 10:00[:00]`` (local time), an ISO date, or an age (``90s``, ``30m``,
    ``2h``, ``1d``)."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        return (time.time() if now is None else now) - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"expected a time such as '2026-12-02 10:00' or an age such as 30m, 2h, 1d; got {text!r}") \
            from None


@dataclass
class LogFilter:
    """Which decisions to read; every condition given must hold (None: any)."""

    since: float | None = None      # UNIX time, inclusive
    until: float | None = None      # UNIX time, exclusive
    rejects: bool = False           # only decisions that rejected (fail-safe rejects included)
    not_fired: bool = False         # only rejects the actuator did not fire for (reject_command not 'sent')
    fail_safe: bool = False         # only fail-safe decisions
    late_ms: float | None = None    # only decisions whose latency exceeded this
    label: str | None = None        # only this class
    lane: int | None = None         # only this line-scan lane
    after_id: int = 0               # only decisions numbered above this

    def where(self, columns: set[str]) -> tuple[str, list]:
        """The SQL condition and its parameters, for a log with these ``columns``."""
        terms, params = ["decision_id > ?"], [self.after_id]
        for clause, value in (("wall_time >= ?", self.since), ("wall_time < ?", self.until),
                              ("latency_ms > ?", self.late_ms), ("class = ?", self.label), ("lane = ?", self.lane)):
            if value is not None:
                terms.append(clause)
                params.append(value)
        if self.rejects:
            terms.append("reject = 1")
        if self.not_fired:  # a log of an older runtime does not say: none of its rows
            terms.append("reject = 1 AND reject_command IS NOT NULL AND reject_command != 'sent'"
                         if "reject_command" in columns else "0")
        if self.fail_safe:
            terms.append("fail_safe IS NOT NULL")
        return " AND ".join(terms), params


def open_read_only(path: str | Path) -> sqlite3.Connection:
    """Open a decision log for reading only; a missing file or one that is not a log says so."""
    path = Path(path)
    if path.is_dir():
        raise DecisionLogError(f"decision log {path} is a directory; give --log the log file in it (the runtime's "
                               "--log, decisions.db by default)")
    if not path.is_file():
        hint = (f"; the installed service's log is {SERVICE_LOG} (give --log {SERVICE_LOG})"
                if SERVICE_LOG.is_file() and path != SERVICE_LOG else
                "; give --log the file the runtime was started with (`drsn-edge run --log`)")
        raise DecisionLogError(f"decision log {path} does not exist{hint}")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        present = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
    except sqlite3.Error as exc:
        shm = path.with_name(path.name + "-shm")
        hint = ("; a reader needs SQLite's index file beside the log, and this user may not create "
                f"{shm}: run it as the log's owner (sudo), or while the runtime runs"
                if not shm.exists() and not os.access(path.parent, os.W_OK) else
                "; the file is damaged (a power cut, a failing disk): the runtime keeps such a log aside at its next "
                "start and begins a new one; sqlite3's .recover command saves what can still be read"
                if is_damaged(path, exc) else "")
        raise DecisionLogError(f"decision log {path} cannot be read: {exc}{hint}") from exc
    if not {"decision_id", "wall_time", "class", "latency_ms"} <= present:
        db.close()
        raise DecisionLogError(f"{path} is not a drsn-edge decision log (it has no decisions table)")
    return db


def _select(present: set[str]) -> str:
    """The columns to read: all of them, NULL for those an older runtime did not write."""
    return ", ".join(c if c in present else f"NULL AS {c}" for c in COLUMNS)


def _columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(decisions)")}


def read_last(db: sqlite3.Connection, flt: LogFilter, count: int) -> list[dict]:
    """The newest ``count`` matching decisions, oldest first."""
    columns = _columns(db)
    where, params = flt.where(columns)
    sql = (f"SELECT * FROM (SELECT {_select(columns)} FROM decisions WHERE {where} "
           f"ORDER BY decision_id DESC LIMIT ?) ORDER BY decision_id")
    return [dict(zip(COLUMNS, row)) for row in _query(db, sql, [*params, count])]


def iter_rows(db: sqlite3.Connection, flt: LogFilter, batch: int = 10_000) -> Iterator[dict]:
    """Every matching decision in order, read in batches (a log of millions of rows is not held in memory)."""
    after = flt.after_id
    while rows := _batch(db, replace(flt, after_id=after), batch):
        yield from rows
        after = rows[-1]["decision_id"]


def _batch(db: sqlite3.Connection, flt: LogFilter, size: int) -> list[dict]:
    """The first ``size`` matching decisions: one short read transaction."""
    columns = _columns(db)
    where, params = flt.where(columns)
    sql = f"SELECT {_select(columns)} FROM decisions WHERE {where} ORDER BY decision_id LIMIT ?"
    return [dict(zip(COLUMNS, row)) for row in _query(db, sql, [*params, size])]


def _query(db: sqlite3.Connection, sql: str, params: list) -> list[tuple]:
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise DecisionLogError(f"the decision log cannot be read: {exc}") from exc


def summarize(db: sqlite3.Connection, flt: LogFilter, unwatched: Unwatched | None = None) -> dict:
    """Counts by outcome, fail-safe reason, class and bundle, rejects the actuator did not fire for, latency
    percentiles of the decided ones, and, in a vibration log, the signal no window decided (``unwatched``:
    the holes of ``read_unwatched``, read here unless the caller has them)."""
    columns = _columns(db)
    where, params = flt.where(columns)
    (n, first, last, t0, t1), = _query(db, f"SELECT COUNT(*), MIN(decision_id), MAX(decision_id), MIN(wall_time), "
                                           f"MAX(wall_time) FROM decisions WHERE {where}", params)

    def grouped(column: str) -> dict:
        rows = _query(db, f"SELECT {column}, COUNT(*) FROM decisions WHERE {where} GROUP BY {column} "
                          f"ORDER BY COUNT(*) DESC", params)
        return {key: count for key, count in rows}

    # Where each one's time went, in a log that says (an older runtime's does not): -1 for NULL.  One pass over
    # the matching rows, the fail-safe ones marked, split below.
    parts = "wait_ms" in columns and "inference_ms" in columns
    split = ", IFNULL(wait_ms, -1), IFNULL(inference_ms, -1)" if parts else ", -1, -1"
    try:  # streamed into an array: 32 bytes a row, not a Python tuple per row, on a log of millions
        cursor = db.execute(f"SELECT latency_ms{split}, fail_safe IS NOT NULL FROM decisions WHERE {where}", params)
        rows = np.fromiter(cursor, dtype=[("latency", "f8"), ("wait", "f8"), ("inference", "f8"), ("fail_safe", "?")])
    except sqlite3.Error as exc:
        raise DecisionLogError(f"the decision log cannot be read: {exc}") from exc
    times, failed = rows[~rows["fail_safe"]], rows[rows["fail_safe"]]
    fail_safe_waits = failed["wait"][failed["wait"] >= 0]
    (oldest, newest), = _query(db, "SELECT MIN(decision_id), MAX(decision_id) FROM decisions", [])
    ends = dict(_query(db, "SELECT decision_id, wall_time FROM decisions WHERE decision_id IN (?, ?)",
                       [oldest, newest]))  # by key: two rows, not a scan
    not_fired = {}  # rejects the actuator did not fire for, by why (a log of an older runtime does not say)
    if "reject_command" in columns:
        not_fired = {k: v for k, v in grouped("reject_command").items() if k not in (None, "sent")}
    unwatched = unwatched or read_unwatched(db, flt)
    return {"decisions": n, "first_id": first, "last_id": last, "first_time": t0, "last_time": t1,
            "rejects": sum(v for k, v in grouped("reject").items() if k), "rejects_not_fired": not_fired,
            "fail_safe": {k: v for k, v in grouped("fail_safe").items() if k is not None},
            "classes": grouped("class"), "bundles": grouped("bundle_sha256"),
            "latency_decided": latency_percentiles(times["latency"]), "latency_parts": latency_parts(times),
            "fail_safe_wait": {"decisions": len(fail_safe_waits)} | _spread(fail_safe_waits) if len(fail_safe_waits)
            else None,  # how long the fail-safe ones had waited for the decider
            "log_first_id": oldest, "log_last_id": newest,
            "log_first_time": ends.get(oldest), "log_last_time": ends.get(newest),
            "unwatched": unwatched and unwatched.summary()}


def latency_parts(times: np.ndarray) -> dict | None:
    """Median and max of where the decided ones' latency went: waiting for the decider, inference, and the rest
    (preprocessing, the decision, the REJECT write); None where the log does not say."""
    said = times[(times["wait"] >= 0) & (times["inference"] >= 0)]
    if not len(said):
        return None
    rest = said["latency"] - said["wait"] - said["inference"]
    return {"decisions": len(said)} | {part: _spread(values) for part, values in
                                       (("wait", said["wait"]), ("inference", said["inference"]), ("rest", rest))}


def _spread(values: np.ndarray) -> dict:
    """Median and max of some times (ms)."""
    return {"p50_ms": float(np.median(values)), "max_ms": float(values.max())}


@dataclass
class Hole:
    """Vibration signal between two windows that no window held: frames lost on the link, a device clock that
    jumped, or time the runtime was not running while the device streamed on."""

    before_id: int          # the last decision before the hole
    before_time: float      # when it was made: about when the hole began
    after_id: int           # the first decision after it
    after_time: float       # when that one was made
    samples: int            # samples of signal in the hole
    seconds: float          # the same in the device's time


#: Each vibration decision (a) beside the one numbered before it (b), where a's window starts after b's ended
#: (a hole) or no later than b's started (a clock that went back): joined on the primary key, so nothing is sorted.
_NEIGHBOURS = """SELECT b.decision_id, b.wall_time, b.span_start, b.span_end, b.device_time_us,
    a.decision_id, a.wall_time, a.span_start, a.span_end, a.device_time_us
    FROM (SELECT * FROM decisions WHERE kind = 'vibration' AND {where}) AS a
    JOIN decisions AS b ON b.decision_id = a.decision_id - 1
    WHERE b.kind = 'vibration' AND (a.span_start > b.span_end + 1 OR a.span_start <= b.span_start)
    ORDER BY a.decision_id"""


def _breaks(db: sqlite3.Connection, flt: LogFilter) -> list[tuple]:
    """Pairs of consecutive vibration decisions in ``flt``'s time range between which the windows broke off."""
    where, params = LogFilter(since=flt.since, until=flt.until).where(_columns(db))
    return _query(db, _NEIGHBOURS.format(where=where), params)


@dataclass
class Unwatched:
    """The holes in a vibration log's signal, oldest first, and how often the device restarted its clock: its
    windows began again at an earlier sample (how much it lost then is not in the log)."""

    holes: list[Hole]
    clock_restarts: int

    def summary(self) -> dict:
        """How many holes, how long in all, the longest, and the clock restarts."""
        longest = max(self.holes, key=lambda hole: hole.seconds, default=None)
        return {"holes": len(self.holes), "seconds": sum(hole.seconds for hole in self.holes),
                "longest": None if longest is None else asdict(longest), "clock_restarts": self.clock_restarts}


def read_unwatched(db: sqlite3.Connection, flt: LogFilter) -> Unwatched | None:
    """The holes in a vibration log's windows within ``flt``'s time range (its other conditions are about
    decisions, not the signal); None for a log without a vibration decision.

    Consecutive windows overlap, so a window that starts after the one before it ended leaves signal that
    no window decided.  The runtime counts it as it happens (``assembler_seconds_undecided``, which also
    holds what was lost before the first window and after the last); the log keeps it across restarts
    of the runtime, and that time is unwatched too.  A clock that went back (a device that restarted) is
    no hole, but counted.  Rows the log failed to write leave their neighbours uncompared.
    """
    if not _query(db, "SELECT 1 FROM decisions WHERE kind = 'vibration' LIMIT 1", []):
        return None
    holes = [_hole(pair) for pair in _breaks(db, flt)]
    return Unwatched([hole for hole in holes if hole is not None], holes.count(None))


def _hole(pair: tuple) -> Hole | None:
    """The hole between a pair of ``_breaks``, or None where the clock went back."""
    before_id, before_time, before_start, before_end, before_us, after_id, after_time, start, end, after_us = pair
    if start <= before_start:
        return None
    samples = start - before_end - 1
    period_us = (after_us - before_us) / (end - before_end)  # both spans are on one device clock
    return Hole(before_id, before_time, after_id, after_time, samples, samples * period_us / 1e6)


def logged_classes(db: sqlite3.Connection) -> list[str]:
    """Every class the log holds a decision of, fail-safe verdicts included, in name order."""
    return [label for (label,) in _query(db, "SELECT DISTINCT class FROM decisions ORDER BY class", [])]


def logged_lanes(db: sqlite3.Connection) -> list[int]:
    """Every lane (line-scan patch column; 0 for vibration) the log holds a decision of, in order."""
    return [lane for (lane,) in _query(db, "SELECT DISTINCT lane FROM decisions ORDER BY lane", [])]


def follow(db: sqlite3.Connection, flt: LogFilter, poll_s: float = 0.5, stop=lambda: False,
           settle_s: float = FATE_KNOWN_WITHIN_S, path: str | Path | None = None) -> Iterator[dict]:
    """Matching decisions numbered above ``flt.after_id``, as the runtime logs them, until ``stop()``.

    Each is listed ``settle_s`` after it was logged, once what became of its REJECT is known:
    the runtime marks a REJECT too late, refused or unanswered on its row after writing it, so
    a row listed at once could say "sent" of a REJECT that never fired, and a follower of
    ``--not-fired`` would never list it at all.  The second is counted from the row's time or
    from when the follower first saw it, whichever is earlier: a gateway's clock set back (a
    clock an hour fast, put right once the network is up) would otherwise hold every row back
    until the clock had caught up with the rows' times.  Given the log's ``path``, the
    follower goes on in the new log a runtime starts there when the one it writes is deleted
    or moved away (said on stderr); without it, it would wait on the old file for rows that
    never come.
    """
    after = flt.after_id
    first_seen: dict[int, float] = {}  # decision id -> time.monotonic() the follower first saw it, for those held
    identity = file_identity(Path(path)) if path is not None else None
    first = db
    try:
        while not stop():
            if path is not None and (at_path := file_identity(Path(path))) not in (identity, None) \
                    and (new := _new_log(Path(path))) is not None:
                for row in _left_behind(db, replace(flt, after_id=after), new):
                    yield row
                    after = row["decision_id"]
                if db is not first:
                    db.close()
                db, identity = new, at_path
            batch = _batch(db, replace(flt, after_id=after), 10_000)
            settled_before, now = time.time() - settle_s, time.monotonic()
            for row in batch:
                first_seen.setdefault(row["decision_id"], now)
            rows = list(takewhile(lambda row: row["wall_time"] <= settled_before
                                  or now - first_seen[row["decision_id"]] >= settle_s, batch))
            yield from rows
            if rows:
                after = rows[-1]["decision_id"]
                first_seen = {k: seen for k, seen in first_seen.items() if k > after}
            if len(rows) < len(batch) or not batch:
                time.sleep(poll_s)
    finally:
        if db is not first:
            db.close()


def _left_behind(old: sqlite3.Connection, flt: LogFilter, new: sqlite3.Connection) -> Iterator[dict]:
    """The matching rows the old file holds below the new log's first row: in no other file that is followed.
    All of them, in batches: a follower far behind (a slow consumer of its output) has more than one."""
    (first_new,) = new.execute("SELECT MIN(decision_id) FROM decisions").fetchone()
    return takewhile(lambda row: first_new is None or row["decision_id"] < first_new, iter_rows(old, flt))


def _new_log(path: Path) -> sqlite3.Connection | None:
    """The new log a runtime started at ``path`` (the one followed was deleted or moved), said on stderr;
    None while it cannot be read yet (still being created: the next poll tries again)."""
    try:
        new = open_read_only(path)
    except DecisionLogError:
        return None
    print(f"decisions: the log at {path} was started again (the one followed was deleted or moved); following "
          "the new one", file=sys.stderr, flush=True)
    return new


def write_csv(rows: Iterator[dict], out: IO[str]) -> int:
    """Every column of each row, one row per decision, with its time also in ISO 8601 (local, with
    its UTC offset) for a spreadsheet; returns how many were written."""
    writer = csv.DictWriter(out, fieldnames=[COLUMNS[0], "time", *COLUMNS[1:]], lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow({**row, "time": datetime.fromtimestamp(row["wall_time"]).astimezone().isoformat()})
        count += 1
    return count


def top_score(row: dict) -> float | None:
    """The highest class probability of a decision (None for a fail-safe, which has none)."""
    scores = json.loads(row["scores"]) if row["scores"] else []
    return max(scores) if scores else None
