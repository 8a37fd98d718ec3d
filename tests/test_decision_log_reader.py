"""`drsn-edge decisions`: the decision log read back as the runtime wrote it, never changed by reading."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import threading
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from edge.cli import main
from edge.runtime.decision_log import DecisionLog, DecisionRow, log_files
from edge.runtime.log_reader import LogFilter, follow, open_read_only, parse_when

CLASSES = ["normal", "B007", "IR007", "OR007@6"]
START = datetime(2026, 12, 2, 6, 0).timestamp()  # a shift begins


def shift_rows(first: int, count: int) -> list[DecisionRow]:
    """A shift's vibration decisions, one a minute: every 7th fail-safe, the rest classed in turn; every 11th
    reject held by the lockout."""
    rows = []
    for k in range(first, first + count):
        fail_safe = ("deadline", "overload")[k % 2] if k % 7 == 0 else None
        label = "OR007@6" if fail_safe else CLASSES[k % 4]
        scores = [] if fail_safe else [0.9 if c == label else 0.1 / 3 for c in CLASSES]
        reject = label != "normal"
        sent = None if not reject else "lockout" if k % 11 == 0 else "sent"
        rows.append(DecisionRow(k, START + 60 * k, "vibration", 1024 * k, 1024 * k + 2047, 85_000 * k, 0, label,
                                scores, reject, fail_safe, 1.0 + (k % 10), None, "ab" * 32,
                                0.3, None if fail_safe else 0.9, sent))
    return rows


@pytest.fixture
def shift_log(tmp_path):
    path = tmp_path / "decisions.db"
    log = DecisionLog(path)
    log.append(shift_rows(1, 300))
    log.close()
    return path


def test_the_summary_counts_what_the_log_holds_and_filters_narrow_it(shift_log, capsys):
    rows = shift_rows(1, 300)
    before = hashlib.sha256(shift_log.read_bytes()).digest()
    assert main(["decisions", "--log", str(shift_log), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["decisions"] == 300 and (s["first_id"], s["last_id"]) == (1, 300)
    assert s["rejects"] == sum(r.reject for r in rows)
    held = [r.decision_id for r in rows if r.reject_command == "lockout"]
    assert s["rejects_not_fired"] == {"lockout": len(held)} and len(held) > 5
    assert s["fail_safe"] == {"deadline": 21, "overload": 21}
    assert s["classes"]["normal"] == sum(r.label == "normal" for r in rows)
    assert s["latency_decided"]["n"] == 300 - 42 and s["latency_decided"]["max_ms"] == 10.0
    # rejects of the second hour, and the slow decisions of the whole shift
    since, until = "2026-12-02 07:00", "2026-12-02 08:00"
    assert main(["decisions", "--log", str(shift_log), "--json", "--rejects", "--since", since, "--until", until]) == 0
    hour = [r for r in rows if START + 3600 <= r.wall_time < START + 7200 and r.reject]
    assert json.loads(capsys.readouterr().out)["decisions"] == len(hour) > 0
    # --last was ignored by --json: the decisions asked for were not there.  Now they are, with every column.
    assert main(["decisions", "--log", str(shift_log), "--json", "--fail-safe", "--last", "2"]) == 0
    latest = json.loads(capsys.readouterr().out)["latest"]
    assert [(r["decision_id"], r["fail_safe"]) for r in latest] == [(r.decision_id, r.fail_safe)
                                                                    for r in rows if r.fail_safe][-2:]
    assert "latest" not in s
    assert main(["decisions", "--log", str(shift_log), "--late", "8", "--class", "IR007", "--last", "3"]) == 0
    out = capsys.readouterr().out
    slow = [r for r in rows if r.latency_ms > 8 and r.label == "IR007"]
    assert f"{len(slow)} decisions" in out
    listed = [int(line.split()[0]) for line in out.splitlines() if line.split()[0].isdigit()]
    assert listed == [r.decision_id for r in slow[-3:]]
    # the summary and the listing say which rejects the actuator never got
    assert main(["decisions", "--log", str(shift_log), "--rejects", "--last", "300"]) == 0
    out = capsys.readouterr().out
    assert f"not fired: held by the lockout {len(held)})" in out
    listed = {int(line.split()[0]): line for line in out.splitlines() if line.split()[0].isdigit()}
    assert [k for k, line in listed.items() if " lockout " in line] == held and len(listed) > len(held)
    assert main(["decisions", "--log", str(shift_log), "--not-fired", "--last", "300"]) == 0
    out = capsys.readouterr().out
    assert [int(line.split()[0]) for line in out.splitlines() if line.split()[0].isdigit()] == held
    assert hashlib.sha256(shift_log.read_bytes()).digest() == before  # reading changed nothing in the log


def test_the_summary_says_where_the_late_decisions_time_went(tmp_path, capsys):
    """A late decision explains itself: the summary of the matching ones splits their latency into the wait for
    the decider, inference and the rest, from the columns each row carries.  A fail-safe (never inferred) and a
    row that does not say are left out of the split, not counted as zero."""
    rows = [replace(row, latency_ms=latency, wait_ms=wait, inference_ms=inference) for row, (latency, wait, inference)
            in zip(shift_rows(1, 6), [(2.0, 0.5, 1.0), (40.0, 1.0, 38.0), (30.0, 20.0, 9.0), (60.0, 2.0, 55.0),
                                      (90.0, 80.0, None), (3.0, None, None)])]
    rows[4] = replace(rows[4], fail_safe="deadline", label="OR007@6", scores=[])
    path = tmp_path / "decisions.db"
    log = DecisionLog(path)
    log.append(rows)
    log.close()
    assert main(["decisions", "--log", str(path), "--late", "20", "--json"]) == 0
    parts = json.loads(capsys.readouterr().out)["latency_parts"]
    assert parts["decisions"] == 3
    assert parts["wait"] == {"p50_ms": 2.0, "max_ms": 20.0}
    assert parts["inference"] == {"p50_ms": 38.0, "max_ms": 55.0}
    assert parts["rest"] == {"p50_ms": 1.0, "max_ms": 3.0}
    assert main(["decisions", "--log", str(path), "--late", "20", "--last", "0"]) == 0
    out = capsys.readouterr().out
    assert ("where it went, p50 / max: waiting for the decider 2.00 / 20.00 ms, inference 38.00 / 55.00 ms, "
            "the rest 1.00 / 3.00 ms") in out
    assert "the fail-safe ones had waited for the decider, p50 / max: 80.00 / 80.00 ms" in out
    assert main(["decisions", "--log", str(path), "--since", "2026-12-02 06:05", "--json"]) == 0  # only the last
    summary = json.loads(capsys.readouterr().out)
    assert summary["latency_parts"] is None and summary["fail_safe_wait"]["decisions"] == 1
    assert main(["decisions", "--log", str(path), "--since", "2026-12-02 06:05", "--last", "0"]) == 0
    assert "where it went" not in capsys.readouterr().out
    assert main(["decisions", "--log", str(path), "--class", "IR007", "--json"]) == 0  # no fail-safe among them
    assert json.loads(capsys.readouterr().out)["fail_safe_wait"] is None

def test_a_class_the_log_never_holds_names_the_classes_it_does(shift_log, capsys):
    assert main(["decisions", "--log", str(shift_log), "--class", "b007"]) == 0
    out = capsys.readouterr().out
    assert "no decision in the log has class 'b007' (did you mean 'B007'?)" in out
    assert "its classes: B007, IR007, OR007@6, normal" in out
    # a class the log holds, which the other filters leave out, gets no hint
    assert main(["decisions", "--log", str(shift_log), "--class", "B007", "--late", "100"]) == 0
    assert "no decision matches" in (out := capsys.readouterr().out) and "its classes" not in out
    for option, value in (("--late", "-5"), ("--lane", "-1"), ("--late", "nan")):
        with pytest.raises(SystemExit):
            main(["decisions", "--log", str(shift_log), option, value])
        assert f"argument {option}" in capsys.readouterr().err


def test_when_nothing_matches_the_log_says_what_it_holds_and_a_time_range_that_cannot_match_is_refused(
        shift_log, capsys):
    def local(t: float) -> str:
        return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    holds = f"the log holds ids 1-300, logged {local(START + 60)} to {local(START + 60 * 300)}"
    assert main(["decisions", "--log", str(shift_log), "--since", "2030-01-01 06:00"]) == 0
    assert f"no decision matches; {holds}" in capsys.readouterr().out
    assert main(["decisions", "--log", str(shift_log), "--lane", "3"]) == 0
    assert "no decision in the log is on lane 3; its lanes: 0" in capsys.readouterr().out
    assert main(["decisions", "--log", str(shift_log), "--lane", "0", "--late", "100"]) == 0
    assert "its lanes" not in capsys.readouterr().out  # lane 0 is logged; --late left its decisions out
    assert main(["decisions", "--log", str(shift_log), "--since", "2h", "--until", "1d"]) == 2
    assert "--since (" in (err := capsys.readouterr().err) and "is not before --until" in err


def test_csv_holds_every_matching_decision_with_every_column(shift_log, tmp_path, capsys):
    out = tmp_path / "fail-safe.csv"
    assert main(["decisions", "--log", str(shift_log), "--fail-safe", "--csv", str(out)]) == 0
    assert "wrote 42 decisions" in capsys.readouterr().out
    exported = list(csv.DictReader(out.open()))
    expected = [r for r in shift_rows(1, 300) if r.fail_safe]
    assert [int(r["decision_id"]) for r in exported] == [r.decision_id for r in expected]
    assert [r["fail_safe"] for r in exported] == [r.fail_safe for r in expected]
    assert all(datetime.fromisoformat(r["time"]).timestamp() == pytest.approx(float(r["wall_time"]), abs=1e-3)
               for r in exported)
    assert main(["decisions", "--log", str(shift_log), "--csv", "-", "--class", "B007"]) == 0
    b007 = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(b007) == sum(r.label == "B007" for r in shift_rows(1, 300))
    assert json.loads(b007[0]["scores"]) == [0.03333, 0.9, 0.03333, 0.03333]
    # --last was ignored by --csv: every matching row came.  Now the latest N, oldest first.
    assert main(["decisions", "--log", str(shift_log), "--csv", "-", "--fail-safe", "--last", "3"]) == 0
    assert [int(r["decision_id"]) for r in csv.DictReader(io.StringIO(capsys.readouterr().out))] == [
        r.decision_id for r in expected[-3:]]
    assert main(["decisions", "--log", str(shift_log), "--csv", str(out), "--last", "5"]) == 0
    assert "wrote 5 decisions" in capsys.readouterr().out and len(list(csv.DictReader(out.open()))) == 5
    unwritable = tmp_path / "no-such-folder" / "shift.csv"
    assert main(["decisions", "--log", str(shift_log), "--csv", str(unwritable)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {unwritable}" in err and "Traceback" not in err


def test_follow_lists_a_reject_with_what_became_of_it(tmp_path):
    """The runtime marks a REJECT unanswered (or too late, or refused) on its row after logging it.  A follower
    listed each row at once: "sent" of a REJECT that never fired, and `--not-fired --follow` never listed it."""
    path = tmp_path / "decisions.db"
    log = DecisionLog(path)
    db = open_read_only(path)
    now = time.time()
    rows = [replace(row, wall_time=now) for row in shift_rows(1, 3)]   # two REJECTs sent, one held
    rows = [replace(row, reject=True, reject_command="lockout" if row.decision_id == 3 else "sent") for row in rows]
    log.append(rows)
    threading.Timer(0.3, log.set_reject_command, args=(1, "unanswered")).start()  # its third send went unanswered
    try:
        for flt, expected in ((LogFilter(not_fired=True), {1: "unanswered", 3: "lockout"}),
                              (LogFilter(), {1: "unanswered", 2: "sent", 3: "lockout"})):
            give_up = time.monotonic() + 10
            listed = {}
            for row in follow(db, flt, poll_s=0.05, stop=lambda: len(listed) == len(expected) or
                              time.monotonic() > give_up):
                listed[row["decision_id"]] = row["reject_command"]
            assert listed == expected
    finally:
        db.close()
        log.close()


def move_away(path: Path) -> None:
    """Move a log and its write-ahead log and index away, as an operator clearing a disk would: ``old-NAME``."""
    for part in log_files(path):
        part.rename(part.with_name(f"old-{part.name}"))


def test_follow_goes_on_in_the_new_log_when_the_one_followed_is_deleted_or_moved(tmp_path, capsys):
    """The runtime starts a new log in place of one deleted or moved away; a follower kept reading the old
    file and waited there for good.  Now it lists the rest of the old file, then the new log's rows, each
    once."""
    path = tmp_path / "decisions.db"
    log = DecisionLog(path, checkpoint_s=0.05)
    log.append(shift_rows(1, 10))
    listed, done = [], threading.Event()
    give_up = time.monotonic() + 20

    def read():
        for row in follow(open_read_only(path), LogFilter(), poll_s=0.02, settle_s=0.0, path=path,
                          stop=lambda: len(listed) >= 40 or time.monotonic() > give_up):
            listed.append(row["decision_id"])
        done.set()

    reader = threading.Thread(target=read)
    reader.start()
    while len(listed) < 10 and time.monotonic() < give_up:
        time.sleep(0.01)
    move_away(path)
    for first in range(11, 41, 5):  # some into the old file, the rest into the new log once it is started
        log.append(shift_rows(first, 5))
        time.sleep(0.03)
    done.wait(25)
    reader.join()
    log.close()
    assert log.reopened == 1 and listed == list(range(1, 41))
    assert f"the log at {path} was started again" in capsys.readouterr().err


def test_a_follower_far_behind_when_the_log_is_moved_lists_every_row_left_in_the_old_file(tmp_path):
    """A follower whose output is consumed slowly can be many rows behind when the log is moved away.  It
    listed at most 10,000 of the old file's rows it had not yet listed, then went on in the new log: the
    rest were never listed.  Now it lists them all, in order, each once."""
    path = tmp_path / "decisions.db"
    log = DecisionLog(path, checkpoint_s=0.05)
    log.append(shift_rows(1, 10))
    behind, total = 25_000, 10 + 25_000 + 30
    listed = []
    give_up = time.monotonic() + 30
    rows = follow(open_read_only(path), LogFilter(), poll_s=0.02, settle_s=0.0, path=path,
                  stop=lambda: len(listed) >= total or time.monotonic() > give_up)
    listed += [next(rows)["decision_id"] for _ in range(10)]  # then its consumer stalls
    log.append(shift_rows(11, behind))
    time.sleep(0.1)
    move_away(path)
    for first in range(11 + behind, 11 + behind + 30, 5):
        log.append(shift_rows(first, 5))
        time.sleep(0.03)
    for row in rows:
        listed.append(row["decision_id"])
    log.close()
    assert log.reopened == 1 and listed == list(range(1, total + 1))


def test_follow_lists_rows_logged_before_the_gateway_s_clock_was_set_back(tmp_path):
    """A gateway that boots with its clock an hour fast logs its first decisions an hour ahead; once the network
    sets the clock right, a follower held each row back until the clock had caught up with the row's time: an
    hour with nothing listed.  Now a row waits for its REJECT's fate from when the follower first saw it."""
    path = tmp_path / "decisions.db"
    log = DecisionLog(path)
    ahead = time.time() + 3600
    log.append([replace(row, wall_time=ahead + k) for k, row in enumerate(shift_rows(1, 5))])
    log.append([replace(row, wall_time=time.time()) for row in shift_rows(6, 5)])  # after the clock was set right
    listed, began = {}, time.monotonic()
    give_up = began + 10
    try:
        for row in follow(open_read_only(path), LogFilter(), poll_s=0.02, settle_s=0.3,
                          stop=lambda: len(listed) == 10 or time.monotonic() > give_up):
            listed[row["decision_id"]] = time.monotonic() - began
    finally:
        log.close()
    assert list(listed) == list(range(1, 11))
    assert 0.3 <= min(listed.values()) and max(listed.values()) < 5   # each after its fate was known, none an hour


def test_follow_lists_each_new_decision_once_while_the_runtime_writes(shift_log):
    """A reader following the log while the runtime's writer appends to it misses none and repeats none."""
    db = open_read_only(shift_log)
    log = DecisionLog(shift_log, checkpoint_s=0.05)  # checkpoints run under the reader too
    new = [shift_rows(301 + 5 * k, 5) for k in range(80)]
    wanted = [r.decision_id for batch in new for r in batch if r.reject]
    seen, done = [], threading.Event()

    def write():
        for batch in new:
            log.append(batch)
        done.set()

    writer = threading.Thread(target=write)
    give_up = time.monotonic() + 60
    rows = follow(db, LogFilter(rejects=True, after_id=300), poll_s=0.01,
                  stop=lambda: done.is_set() and len(seen) >= len(wanted) or time.monotonic() > give_up)
    writer.start()
    for row in rows:
        seen.append(row["decision_id"])
        if len(seen) > len(wanted):
            break
    writer.join()
    log.close()
    db.close()
    assert seen == wanted


def test_a_missing_or_foreign_file_is_refused_and_left_as_it_was(tmp_path, capsys):
    missing = tmp_path / "nope.db"
    assert main(["decisions", "--log", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing.exists()
    assert main(["decisions", "--log", str(tmp_path)]) == 2  # the folder, not the file in it
    assert f"decision log {tmp_path} is a directory" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("not a log\n" * 100)
    assert main(["decisions", "--log", str(text)]) == 2
    assert "cannot be read" in capsys.readouterr().err and text.read_text() == "not a log\n" * 100
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE parts (id INTEGER)")
    before = other.read_bytes()
    assert main(["decisions", "--log", str(other)]) == 2
    assert "not a drsn-edge decision log" in capsys.readouterr().err and other.read_bytes() == before
    with pytest.raises(SystemExit):
        main(["decisions", "--log", str(other), "--since", "yesterday"])
    assert "an age such as 30m" in capsys.readouterr().err


def test_times_are_read_as_local_clock_times_or_ages():
    assert parse_when("2026-12-02 06:00") == START
    assert parse_when("90s", now=1000.0) == 910.0 and parse_when("2h", now=10_000.0) == 2800.0
    assert parse_when("1.5d", now=200_000.0) == 200_000.0 - 129_600


def windows_with_breaks() -> list[DecisionRow]:
    """Vibration windows of 2,048 samples every 1,024 at 12 kHz, with: 3,000 samples lost after window 5; the
    device restarting its clock after window 9; the runtime stopped for an hour after window 12 while the
    device streamed on.  Each decision is made as its last sample arrives."""
    rows, start, wall = [], 0, START
    for k in range(1, 16):
        if k > 1:
            start, wall = start + 1024, wall + 1024 / 12000
        if k == 6:  # 3,000 samples after window 5's last
            start, wall = start + 1024 + 3000, wall + (1024 + 3000) / 12000
        if k == 10:
            start, wall = 0, wall + 5.0
        if k == 13:
            start, wall = start + 3600 * 12000, wall + 3600
        end = start + 2047
        rows.append(DecisionRow(k, wall, "vibration", start, end, round(end * 1e6 / 12000), 0, "normal",
                                [0.9, 0.1], False, None, 1.2, None, "ab" * 32, 0.3, 0.8, None))
    return rows


def test_the_signal_no_window_decided_is_read_from_the_windows_of_a_vibration_log(tmp_path, capsys):
    """The runtime counts undecided signal as it happens; only the log keeps it across restarts of the runtime,
    and says when.  Before, `decisions` showed decisions alone: an hour unwatched left no trace in its output."""
    path = tmp_path / "decisions.db"
    log = DecisionLog(path)
    log.append(windows_with_breaks())
    log.close()
    assert main(["decisions", "--log", str(path), "--json"]) == 0
    u = json.loads(capsys.readouterr().out)["unwatched"]
    assert (u["holes"], u["clock_restarts"]) == (2, 1)
    assert u["seconds"] == pytest.approx((3000 + 3600 * 12000 - 1024) / 12000, abs=1e-6)
    assert (u["longest"]["before_id"], u["longest"]["after_id"]) == (12, 13)
    assert u["longest"]["after_time"] - u["longest"]["before_time"] == pytest.approx(3600 + 1024 / 12000)

    assert main(["decisions", "--log", str(path)]) == 0
    out = capsys.readouterr().out
    assert "signal no window decided: 1 h 0 min in 2 holes between windows" in out
    assert "the device restarted its clock 1 time" in out

    # within a time range, only its holes; --unwatched lists them (the latest N), and none is a decision row
    assert main(["decisions", "--log", str(path), "--until", datetime.fromtimestamp(START + 60).isoformat(),
                 "--unwatched"]) == 0
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.startswith("2026-")]
    assert len(listed) == 1 and listed[0].split()[-2:] == ["s", "5-6"] and "0.25 s" in listed[0]
    assert main(["decisions", "--log", str(path), "--unwatched", "--last", "1", "--json"]) == 0
    assert [(h["before_id"], h["samples"]) for h in json.loads(capsys.readouterr().out)["unwatched_holes"]] == \
        [(12, 3600 * 12000 - 1024)]
    assert main(["decisions", "--log", str(path), "--unwatched", "--follow"]) == 2
    assert "choose one" in capsys.readouterr().err

    # a log without breaks says nothing of them; one of line-scan tiles says where its lost belt is instead
    assert main(["decisions", "--log", str(path), "--since", datetime.fromtimestamp(START + 3700).isoformat(),
                 "--unwatched"]) == 0
    assert "no hole: every sample" in (out := capsys.readouterr().out) and "signal no window" not in out
    tiles = tmp_path / "tiles.db"
    log = DecisionLog(tiles)
    log.append([replace(row, kind="linescan", span_start=8 * k, span_end=8 * k + 31)
                for k, row in enumerate(windows_with_breaks()[:3])])
    log.close()
    assert main(["decisions", "--log", str(tiles), "--unwatched", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unwatched"] is None
    assert main(["decisions", "--log", str(tiles), "--unwatched"]) == 0
    assert "holds no vibration decision" in capsys.readouterr().out
