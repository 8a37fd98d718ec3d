"""Every decision, one row, in an embedded SQLite database in WAL mode.

Each unit's decisions are committed as they are appended (one row for a vibration
window, one transaction for the patches of a line-scan tile), after the decisions
have been written to the port (so the disk never delays a REJECT).  In WAL mode with
``synchronous=NORMAL`` a commit costs tens of microseconds and survives a kill -9 of
the process: at most the unit being written is lost, and the database opens cleanly
afterwards.  (A power cut
can lose the last commits; ``synchronous=FULL`` trades speed for that.)

A gateway's disk is finite and a line-scan runtime logs hundreds of decisions a
second, so the log can be bounded: past ``max_bytes`` each commit also deletes a few
of the oldest rows, in the same transaction, until the log is back under 90 % of the
bound; they are counted (``retired``).  SQLite reuses their pages, so the file stops
growing.  Spread over the commits, trimming costs each a fraction of a millisecond;
done in bursts by another thread, it held the decider up long enough to make tiles
late (benchmarks/log_retention.py).  A write that fails (a full disk, an I/O error)
costs the log its rows, counted (``failed``) and reported on stderr, never the
decisions: their REJECTs are already on the wire, and the line stays protected.

The write-ahead log is bounded too.  A checkpoint copies its pages into the database,
and SQLite starts it over only once a checkpoint has copied every page in it.  The
checkpoints run in a thread of their own (they sync the disk), and at a few hundred
commits a second new pages always arrive while one runs: the write-ahead log then never
starts over and grows by a page per commit (270 MB in five minutes of a vibration
stream at 50 times its rate).  So when it passes ``wal_limit_bytes`` the writer itself
copies the few pages the last checkpoint left, once, between two commits; nothing can
arrive meanwhile, so the log starts over and is cut back to the limit (``wal_catch_ups``).

A log deleted or moved while the runtime writes it (an operator clearing a full disk)
would take every later row with it: SQLite goes on writing to the file it opened, which
no one can read any more.  The checkpoint thread looks every few seconds whether the
file at the log's path is still the one open; when it is not, the writer starts a new
log there, carrying over the rows written since the file was last seen in place, and
says so (``reopened``).

A log SQLite finds damaged when the runtime starts (a power cut on storage that does not
keep its promises, a failing disk) is kept under another name and a new log is started,
as journald does with a damaged journal: a runtime that refused to start would leave the
line unprotected until someone came.  Decision ids begin again at 1 in the new log (a damaged
log's last id cannot be trusted); the device forgets the ids it remembers at the runtime's
HELLO, so its REJECTs still fire.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge.errors import DrsnEdgeError


class DecisionLogError(DrsnEdgeError):
    """The decision log cannot be opened or written where it was asked for."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    decision_id   INTEGER PRIMARY KEY,
    wall_time     REAL NOT NULL,      -- UNIX time the decision was made
    kind          TEXT NOT NULL,      -- vibration | linescan
    span_start    INTEGER NOT NULL,   -- first sample index or encoder count
    span_end      INTEGER NOT NULL,   -- last sample index or encoder count
    device_time_us INTEGER NOT NULL,
    lane          INTEGER NOT NULL,
    class         TEXT NOT NULL,
    scores        TEXT NOT NULL,      -- JSON list, softmax per class; empty for fail-safe decisions
    reject        INTEGER NOT NULL,
    fail_safe     TEXT,               -- NULL, or why: deadline | overload | gap
    latency_ms    REAL NOT NULL,      -- last sample arrival -> decision written
    fire_at       INTEGER,            -- encoder count (line-scan) the REJECT fires at
    bundle_sha256 TEXT NOT NULL,
    wait_ms       REAL,               -- last sample arrival -> the decider took the unit
    inference_ms  REAL,               -- the backend's call; NULL for fail-safe decisions
    reject_command TEXT               -- a reject's REJECT: sent, or why it did not fire (NOT_FIRED_WHY); NULL: pass
);
"""

#: Columns added since the first release, with their types: a log written by an older
#: runtime gets them (NULL in its old rows) when a newer one opens it.
ADDED_COLUMNS = {"wait_ms": "REAL", "inference_ms": "REAL", "reject_command": "TEXT"}

COLUMNS = ("decision_id", "wall_time", "kind", "span_start", "span_end", "device_time_us", "lane", "class", "scores",
           "reject", "fail_safe", "latency_ms", "fire_at", "bundle_sha256", "wait_ms", "inference_ms", "reject_command")
INSERT = f"INSERT INTO decisions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
INSERT_NEW = INSERT.replace("INSERT", "INSERT OR IGNORE", 1)  # rows not there already
RETIRE = "DELETE FROM decisions WHERE decision_id IN (SELECT decision_id FROM decisions ORDER BY decision_id LIMIT ?)"

#: A reject decision's ``reject_command`` is ``sent`` (written to the port), or one of these: why the actuator
#: did not fire for it, and how a person is told.  The device was gone; the lockout held it; the device's
#: encoder count began again since its tile was scanned; the device answered that its part had passed (a
#: TOO_LATE NAK), or refused it otherwise, or never answered it, however often it was sent (reject_ledger.py);
#: its belt was lost in a gap of the stream and had passed the actuator before the stream went on.
NOT_FIRED_WHY = {"not_written": "not written (no device)", "lockout": "held by the lockout",
                 "untimed": "untimed after a device restart", "too_late": "too late for the device",
                 "refused": "refused by the device", "unanswered": "unanswered by the device",
                 "passed": "passed the actuator unchecked"}


def reject_word(reject: bool, reject_command: str | None) -> str:
    """A decision's reject as a listing shows it: ``no``, ``yes`` (its REJECT went out, or a log of an older
    runtime, which does not say), or why the actuator did not fire for it (``lockout``, ``too_late``, ...)."""
    if not reject:
        return "no"
    return "yes" if reject_command in (None, "sent") else reject_command


@dataclass
class DecisionRow:
    decision_id: int
    wall_time: float
    kind: str
    span_start: int
    span_end: int
    device_time_us: int
    lane: int
    label: str
    scores: list[float]
    reject: bool
    fail_safe: str | None
    latency_ms: float
    fire_at: int | None
    bundle_sha256: str
    wait_ms: float | None = None       # where a late decision's time went: waiting for the decider,
    inference_ms: float | None = None  # the backend, or (latency_ms minus both) preprocessing and writing
    reject_command: str | None = None  # 'sent', or why the REJECT did not fire (NOT_FIRED_WHY); None: a pass

    def values(self) -> tuple:
        return (self.decision_id, self.wall_time, self.kind, self.span_start, self.span_end, self.device_time_us,
                self.lane, self.label, json.dumps([round(s, 5) for s in self.scores]), int(self.reject),
                self.fail_safe, self.latency_ms, self.fire_at, self.bundle_sha256, self.wait_ms, self.inference_ms,
                self.reject_command)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (or create) a decision log in WAL mode; a log that cannot be opened says why."""
    db = None
    try:
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        present = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in present:
                db.execute(f"ALTER TABLE decisions ADD COLUMN {name} {kind}")
    except sqlite3.Error as exc:
        if db is not None:
            db.close()  # the file is not held open (nor kept from being renamed aside, or its disk unmounted)
        raise DecisionLogError(f"decision log {path}: {exc}; {_why_not(Path(path), exc)}") from exc
    return db


#: SQLite's result code for a full disk (``sqlite3.SQLITE_FULL`` from Python 3.11 on).
SQLITE_FULL = 13


def _why_not(path: Path, exc: BaseException | None = None) -> str:
    """What to do about a log that would not open, from the error and what is at its place."""
    if getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(exc) \
            or getattr(exc, "errno", None) == errno.ENOSPC:
        return "the disk is full: free some space on it, or give --log a path on another disk"
    if not path.parent.is_dir():
        return f"its directory {path.parent} does not exist (create it, or give --log another path)"
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"this user may not write {path if path.exists() else path.parent}"
    if path.is_dir():
        return f"it is a directory: give --log a file in it ({path / 'decisions.db'})"
    if path.exists():
        return "the file is not a decision log (give --log another path; nothing was changed in it)"
    return "give --log another path"


def writer_lock_path(path: Path) -> Path:
    """The lock file beside a log that its one writer holds."""
    return path.with_name(path.name + ".lock")


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


#: Why a log is started anew in place of the one written, as the journal says it.
GONE = "was deleted or moved while this runtime wrote it"

#: The first bytes of every SQLite database: a file that has them and that SQLite finds damaged is a
#: damaged log, not someone else's file given as --log by mistake.
SQLITE_HEADER = b"SQLite format 3\x00"
#: SQLite's result code for a damaged database (``sqlite3.SQLITE_CORRUPT`` from Python 3.11 on).
SQLITE_CORRUPT = 11


def is_damaged(path: Path, exc: BaseException | None) -> bool:
    """Whether ``exc`` (raised opening, reading or writing the log at ``path``) says the file is an SQLite
    database that is damaged.  The file is read only for an error that says so."""
    if not isinstance(exc, sqlite3.DatabaseError) or not (
            getattr(exc, "sqlite_errorcode", None) == SQLITE_CORRUPT or "malformed" in str(exc)):
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def log_files(path: Path) -> list[Path]:
    """The log at ``path`` and the two files SQLite keeps beside it in WAL mode (write-ahead log, index)."""
    return [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm")]


def set_aside(path: Path) -> Path:
    """Rename a damaged log (and its write-ahead log and index) to ``NAME.damaged-<UTC time>``; returns the new
    name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for part, renamed in zip(log_files(path), log_files(aside)):
        if part.exists():
            part.rename(renamed)
    return aside


def lock_for_writing(path: Path):
    """Hold ``LOG.lock`` while this process writes the log at ``path``; returns the open lock file.

    Two runtimes on one log would number their decisions from the same id, and one of them
    would lose its rows; the second is refused instead.  Readers do not take the lock, and
    the system releases it when the process ends, even by kill -9.
    """
    try:
        lock = open(writer_lock_path(path), "a+")
    except OSError as exc:
        raise DecisionLogError(f"decision log {path}: {exc.strerror}; {_why_not(path, exc)}") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        raise DecisionLogError(f"decision log {path} is being written by another runtime"
                               + (f" (process {holder})" if holder else "")
                               + "; give this one another --log, or stop the other (the installed service: "
                                 "systemctl stop drsn-edge)") from None
    try:  # unbuffered: on a full disk nothing is left to fail again when the lock is closed
        os.ftruncate(lock.fileno(), 0)
        os.pwrite(lock.fileno(), f"{os.getpid()}\n".encode(), 0)
    except OSError:  # a full disk: the lock holds without the process named in it
        pass
    return lock


def next_decision_id(path: str | Path) -> int:
    """Decision ids continue across restarts of the runtime."""
    db = connect(path)
    try:
        (last,) = db.execute("SELECT COALESCE(MAX(decision_id), 0) FROM decisions").fetchone()
        return int(last) + 1
    finally:
        db.close()


#: A log over its bound deletes this many of its oldest rows per commit (at least; twice the
#: rows committed when more): a line-scan tile's commit grows by about 0.1 ms, and a log
#: far over a new, lower bound still shrinks by hundreds of rows a second.
RETIRE_PER_COMMIT = 64
#: Once over its bound, the log is trimmed to this share of it.
RETIRE_TO = 0.9
#: How often (in commits) the log measures its size.
MEASURE_EVERY = 64
#: A log that keeps failing says so on stderr at most this often.
REPORT_EVERY_S = 60.0
#: Past this many bytes of write-ahead log the writer completes a checkpoint itself.
WAL_LIMIT_BYTES = 16_000_000
#: Each page in the write-ahead log travels behind a header of this many bytes.
WAL_FRAME_HEADER = 24


class DecisionLog:
    """Appends rows; WAL checkpoints (the only step that syncs the disk) run in a thread of their own.

    SQLite would otherwise checkpoint inside whichever commit crosses 1,000 pages of WAL,
    stalling the decision loop for milliseconds.
    """

    def __init__(self, path: str | Path, checkpoint_s: float = 5.0, max_bytes: int | None = None,
                 wal_limit_bytes: int = WAL_LIMIT_BYTES):
        self.path = Path(path)
        self.max_bytes = max_bytes or None  # None or 0: unbounded
        lock_path = writer_lock_path(self.path)
        lock_existed, log_existed = lock_path.exists(), self.path.exists()
        self._writer_lock = lock_for_writing(self.path)
        self._wal_limit_bytes = wal_limit_bytes
        self.damaged_set_aside: Path | None = None  # where the latest log found damaged was kept
        try:
            self._db = self._open_or_set_aside()
        except DecisionLogError:  # not a log, or no room for one: leave the folder as it was
            self._writer_lock.close()
            if not lock_existed:
                lock_path.unlink(missing_ok=True)
            if not log_existed:
                for part in log_files(self.path):
                    part.unlink(missing_ok=True)
            raise
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        self._wal_limit_frames = wal_limit_bytes // (page_size + WAL_FRAME_HEADER)
        self._lock = threading.Lock()
        self.written = 0
        self.retired = 0   # oldest rows deleted to keep the log within max_bytes
        self.failed = 0    # rows that could not be written (disk full, I/O error)
        self.wal_catch_ups = 0          # checkpoints the writer completed itself (see the module's docstring)
        self.reopened = 0               # new logs started: the file was deleted, moved away or damaged as written
        self._identity = file_identity(self.path)  # the file open, to tell when another takes its place
        self._last_id = 0               # the latest decision id appended
        self._in_place_up_to = 0        # the latest id appended while the file was seen at its path
        self._gone = threading.Event()  # the file at the path is not the one open (checkpointer), or is damaged
        self._gone_why = GONE           # which of the two, as the journal says it
        self._generation = 0            # new logs started; the checkpointer reconnects when it changes
        self._catch_up = threading.Event()  # set by the checkpointer: the write-ahead log is past its limit
        self._reported = float("-inf")
        self._commits = 0
        self._trimming = False  # over the bound, and not yet back under RETIRE_TO of it
        self._closed = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(checkpoint_s,),
                                              name="log-checkpoint", daemon=True)
        self._checkpointer.start()

    def _open_or_set_aside(self) -> sqlite3.Connection:
        """The writer's connection; a log SQLite finds damaged is kept under another name and a new one started."""
        try:
            return self._open()
        except DecisionLogError as exc:
            if not is_damaged(self.path, exc.__cause__):
                raise
            try:
                self.damaged_set_aside = set_aside(self.path)
            except OSError as moving:
                raise DecisionLogError(f"decision log {self.path} is damaged ({exc.__cause__}) and cannot be set "
                                       f"aside ({moving.strerror or moving}): move it away, or give --log another "
                                       "path") from moving
            print(f"runtime: decision log {self.path} is damaged ({exc.__cause__}: a power cut on storage that lost "
                  f"what it had promised to keep, or a failing disk); it is kept as {self.damaged_set_aside} for "
                  "inspection, and a new log is started: decisions go on being logged", file=sys.stderr, flush=True)
            return self._open()

    def _open(self) -> sqlite3.Connection:
        """A connection for the writer: checkpoints left to the checkpointer, the write-ahead log bounded."""
        db = connect(self.path)
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute(f"PRAGMA journal_size_limit={int(self._wal_limit_bytes)}")  # the file shrinks as it starts over
        return db

    def _checkpoint_loop(self, every: float) -> None:
        generation = self._generation
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            while not self._closed.wait(every):
                if generation != self._generation:  # the writer started a new log: checkpoint that one
                    db.close()
                    generation = self._generation
                    db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
                if not self._still_in_place():
                    continue
                try:
                    _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # a full disk: the appends count their own failures
                    self._report(f"decision log {self.path}: checkpoint failed: {exc}")
                    continue
                if frames > self._wal_limit_frames:  # copied all it saw, but more came while it copied
                    self._catch_up.set()
        finally:
            db.close()

    def used_bytes(self) -> int:
        """Bytes the log's rows take (its pages less the free ones, which SQLite reuses)."""
        with self._lock:
            return self._used_bytes()

    def _used_bytes(self) -> int:
        page_size, pages, free = (self._db.execute(f"PRAGMA {name}").fetchone()[0]
                                  for name in ("page_size", "page_count", "freelist_count"))
        return (pages - free) * page_size

    def _measure(self) -> None:
        """Every ``MEASURE_EVERY`` commits: start trimming over the bound, stop under ``RETIRE_TO`` of it."""
        self._commits += 1
        if self.max_bytes and self._commits % MEASURE_EVERY == 0:
            used = self._used_bytes()
            self._trimming = used > RETIRE_TO * self.max_bytes if self._trimming else used > self.max_bytes

    def append(self, rows: list[DecisionRow]) -> None:
        """Commit the decisions of one unit (a window, or every patch of a tile) in one transaction.

        Over the bound, the same transaction retires the oldest rows.  A failed write is
        counted and reported, not raised: the decisions stand without their rows.  A log that
        SQLite finds damaged as it writes is kept aside, and the rows go into a new one.
        """
        with self._lock:
            self._append(rows, damage_seen=False)

    def _append(self, rows: list[DecisionRow], damage_seen: bool) -> None:
        if self._gone.is_set():
            self._start_over()
        retire = max(RETIRE_PER_COMMIT, 2 * len(rows)) if self._trimming else 0
        retired = 0
        try:
            if len(rows) == 1 and not retire:
                self._db.execute(INSERT, rows[0].values())
            else:
                with self._db:  # BEGIN ... COMMIT; a tile's rows land together or not at all
                    self._db.execute("BEGIN")
                    self._db.executemany(INSERT, [row.values() for row in rows])
                    if retire:
                        retired = self._db.execute(RETIRE, (retire,)).rowcount
            self._measure()
        except sqlite3.Error as exc:
            if not damage_seen and is_damaged(self.path, exc) and self._set_aside_while_written(exc):
                self._append(rows, damage_seen=True)  # into the new log
                return
            self.failed += len(rows)
            self._report(f"decision log {self.path}: {len(rows)} row(s) not written ({exc}); "
                         f"{self.failed} so far; decisions go on")
            return
        self.written += len(rows)
        self.retired += retired
        self._last_id = rows[-1].decision_id
        if self._catch_up.is_set():
            self._complete_checkpoint()

    def _set_aside_while_written(self, exc: sqlite3.Error) -> bool:
        """Keep a log SQLite found damaged as it wrote under another name, and have a new one started (False
        when it cannot be renamed: the rows are then counted as not written)."""
        try:
            aside = set_aside(self.path)
        except OSError as moving:
            self._report(f"decision log {self.path} is damaged ({exc}) and cannot be set aside "
                         f"({moving.strerror or moving}); rows are not written until it is moved away")
            return False
        self.damaged_set_aside = aside
        self._gone_why = f"was found damaged as it was written ({exc}; kept as {aside})"
        self._gone.set()
        return True

    def set_reject_command(self, decision_id: int, reject_command: str) -> None:
        """Record what became of a decision's REJECT after its row was written: refused or never answered."""
        with self._lock:
            try:
                self._db.execute("UPDATE decisions SET reject_command = ? WHERE decision_id = ?",
                                 (reject_command, decision_id))
            except sqlite3.Error as exc:
                self._report(f"decision log {self.path}: decision {decision_id} not marked {reject_command} ({exc})")

    def _still_in_place(self) -> bool:
        """Whether the file at the log's path is the one being written (checkpointer's thread); when not, the
        writer is told to start a new log there.  Every row appended before the look is in the file seen."""
        if self._gone.is_set():
            return False
        appended = self._last_id
        if file_identity(self.path) == self._identity:
            self._in_place_up_to = appended
            with self._lock:
                try:
                    self._hold_lock_at_its_path()
                except DecisionLogError as exc:
                    self._report(f"{exc}: its lock file was deleted while this runtime wrote it, and another took "
                                 "a new one; two runtimes now write one log (stop one)")
            return True
        self._gone.set()
        return False

    def _hold_lock_at_its_path(self) -> None:
        """Hold the lock file at ``LOG.lock`` again if the one held was deleted or replaced: a second runtime
        would otherwise find no lock held and write the same log.  The new lock is taken before the old one is
        let go; ``DecisionLogError`` when another process holds it."""
        held = os.fstat(self._writer_lock.fileno())
        if file_identity(writer_lock_path(self.path)) != (held.st_dev, held.st_ino):
            lock = lock_for_writing(self.path)
            self._writer_lock.close()
            self._writer_lock = lock

    def _start_over(self) -> None:
        """Start a new log at the path, with the rows written since the old file was last seen there, and say
        so.  A log that cannot be created there (its directory gone) keeps writing the old file, said too;
        the next look tries again."""
        self._gone.clear()
        old = self._db
        try:
            carried = old.execute(f"SELECT {', '.join(COLUMNS)} FROM decisions WHERE decision_id > ?",
                                  (self._in_place_up_to,)).fetchall()
        except sqlite3.Error as exc:
            carried = []
            self._report(f"decision log {self.path}: the rows written since it was last seen cannot be read back "
                         f"({exc}); the new log starts without them")
        try:
            self._hold_lock_at_its_path()  # the lock file may have gone with the log
            self._db = self._open()
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(INSERT_NEW, carried)  # a file put back in its place may hold some already
        except (DecisionLogError, sqlite3.Error) as exc:
            if self._db is not old:
                self._db.close()
                self._db = old
            self._report(f"decision log {self.path} {self._gone_why}, and no new log can be started there ({exc}): "
                         "rows go on into the old file, which no one can read if it was deleted; give the log its "
                         "place back")
            return
        old.close()
        self._identity = file_identity(self.path)
        self._generation += 1
        self.reopened += 1
        print(f"runtime: decision log {self.path} {self._gone_why}: a new log is started there, with the "
              f"{len(carried)} decisions written since the old file was last seen; the ones before are only in the "
              "old file, if it was kept (counted as log_reopened)", file=sys.stderr, flush=True)
        self._gone_why = GONE

    def _complete_checkpoint(self) -> None:
        """Copy what the last checkpoint left, between two commits, so that the write-ahead log starts over.

        The last checkpoint copied nearly everything, so this is short; a reader holding an old
        snapshot (``drsn-edge decisions``) can keep it from completing, and it is tried again.
        """
        try:
            busy, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            self._report(f"decision log {self.path}: checkpoint failed: {exc}")
            return
        if not busy and copied == frames:
            self._catch_up.clear()
            self.wal_catch_ups += 1

    def _report(self, message: str) -> None:
        now = time.monotonic()
        if now - self._reported >= REPORT_EVERY_S:
            self._reported = now
            print(f"runtime: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._closed.set()
        self._checkpointer.join(timeout=5)
        with self._lock:
            if self._gone.is_set() or file_identity(self.path) != self._identity:
                self._start_over()  # deleted, then the service stopped: the latest rows go where the next run looks
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # the WAL keeps the rows; the next open checkpoints it
                self._report(f"decision log {self.path}: final checkpoint failed: {exc}")
            self._db.close()
        self._writer_lock.close()  # another runtime may write it now
