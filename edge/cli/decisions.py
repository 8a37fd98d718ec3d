"""`drsn-edge decisions`: what the runtime decided, read from its decision log (gateway side, no torch).

The questions a plant engineer asks the log (which parts were rejected this morning,
which windows got the fail-safe, which decisions came late) answered without SQL;
the reading itself is in :mod:`edge.runtime.log_reader`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edge.cli.common import non_negative_float, non_negative_int
from edge.errors import DrsnEdgeError


#: Decisions listed after the summary unless --last says otherwise.
LISTED = 20

EPILOG_DECISIONS = """examples:
  drsn-edge decisions --log /var/lib/drsn-edge/decisions.db      # summary and the last 20 decisions
  drsn-edge decisions --rejects --since 2h --last 100            # what was rejected in the last two hours
  drsn-edge decisions --not-fired --since 1d                     # rejects the actuator never got, and why
  drsn-edge decisions --fail-safe --since "2026-12-02 06:00"     # fail-safe decisions since the shift began
  drsn-edge decisions --late 5                                   # decisions that took longer than 5 ms
  drsn-edge decisions --since 1d --csv shift.csv                 # every decision of a day, for a spreadsheet
  drsn-edge decisions --rejects --follow                         # rejects as they happen (Ctrl-C ends)
  drsn-edge decisions --unwatched --since 1d                     # vibration signal no window decided, and when

The log is opened read-only: reading it while the runtime writes it is safe. Latency
is from the arrival of a window's last sample (or a tile's last line) to its decision
written to the port; fail-safe decisions are counted apart and left out of it.
In a vibration log, signal that no window decided (frames lost on the link, a
device that restarted, the runtime stopped while the machine ran) is a hole
between windows: the summary says how long they were in all, --unwatched lists them.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decisions", help="read the decision log: counts, latency, rejects, fail-safes, CSV export",
                       description="What the runtime decided, from its SQLite decision log: a summary of the "
                                   "matching decisions (outcomes, fail-safe reasons, classes, latency and where it "
                                   "went), the latest of them, every one of them as CSV, or new ones as they are "
                                   "logged.",
                       epilog=EPILOG_DECISIONS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", type=Path, default=Path("decisions.db"),
                   help="the runtime's --log (default decisions.db; the installed service's is "
                        "/var/lib/drsn-edge/decisions.db)")
    p.add_argument("--since", type=_when, default=None, metavar="WHEN",
                   help="from this time on: '2026-12-02 06:00' (local time) or an age: 90s, 30m, 2h, 1d")
    p.add_argument("--until", type=_when, default=None, metavar="WHEN", help="before this time (same forms)")
    p.add_argument("--rejects", action="store_true", help="only decisions that rejected (fail-safe rejects too)")
    p.add_argument("--not-fired", action="store_true",
                   help="only rejects the actuator did not fire for (held by the lockout, too late for the device, "
                        "unanswered by it, untimed after a device restart, not written)")
    p.add_argument("--fail-safe", action="store_true", help="only fail-safe decisions (deadline, overload, ...)")
    p.add_argument("--late", type=non_negative_float, default=None, metavar="MS", help="only decisions slower than MS ms")
    p.add_argument("--class", dest="label", default=None, metavar="NAME", help="only decisions of this class")
    p.add_argument("--lane", type=non_negative_int, default=None, help="only this line-scan lane (patch column)")
    p.add_argument("--last", type=non_negative_int, default=None, metavar="N",
                   help=f"list the latest N matching decisions (default {LISTED}; 0: the summary alone); with "
                        "--csv, write only the latest N")
    p.add_argument("--unwatched", action="store_true",
                   help="list the holes in a vibration log's signal that no window decided (the latest N with "
                        "--last), each with when it began and ended and how long, instead of decisions")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", default=None, metavar="FILE",
                     help="write every matching decision (the latest N with --last), every column, to FILE "
                          "('-': standard output)")
    out.add_argument("--json", action="store_true",
                     help="print the summary as JSON (with --last N, the latest N decisions too, as 'latest')")
    out.add_argument("--follow", action="store_true",
                     help="then list matching decisions as they are logged, each a second later, once what became "
                          "of its REJECT is known (answered, sent again, or unanswered)")
    p.set_defaults(func=_cmd_decisions)


def _when(text: str) -> float:
    from edge.runtime.log_reader import parse_when

    try:
        return parse_when(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _local(t: float | None) -> str:
    from datetime import datetime

    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


ROW_HEADER = f"{'id':>9} {'time':23} {'span':>23} {'lane':>4} {'class':12} {'p':>5} {'reject':11} " \
             f"{'fail-safe':9} {'latency ms':>10} {'fires at':>10}"


def _format_row(row: dict) -> str:
    from edge.runtime.decision_log import reject_word
    from edge.runtime.log_reader import top_score

    p = top_score(row)
    span = f"{row['span_start']}-{row['span_end']}"
    score = "" if p is None else f"{p:.3f}"
    return (f"{row['decision_id']:>9} {_local(row['wall_time']):23} {span:>23} {row['lane']:>4} "
            f"{row['class'][:12]:12} {score:>5} {reject_word(row['reject'], row['reject_command']):11} "
            f"{row['fail_safe'] or '':9} {row['latency_ms']:>10.2f} {'' if row['fire_at'] is None else row['fire_at']:>10}")


def _duration(seconds: float) -> str:
    """``42 s``, ``12 min 5 s``, ``3 h 20 min``, ``2 d 4 h``: as long as it needs to be, no longer."""
    s = int(round(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if s >= size:
            return f"{s // size} {unit} {s % size // sub_size} {sub}"
    return f"{s} s"


def _print_log_summary(log: Path, s: dict) -> None:
    from edge.runtime.decision_log import NOT_FIRED_WHY

    if not s["decisions"]:
        print(f"{log}: no decision matches; the log holds ids {s['log_first_id']}-{s['log_last_id']}, logged "
              f"{_local(s['log_first_time'])} to {_local(s['log_last_time'])}"
              if s["log_last_id"] is not None else f"{log}: no decision logged yet")
        return
    print(f"{log}: {s['decisions']:,} decision{'s' if s['decisions'] != 1 else ''} (ids {s['first_id']}-"
          f"{s['last_id']}), {_local(s['first_time'])} "
          f"to {_local(s['last_time'])} ({_duration(s['last_time'] - s['first_time'])})")
    fail_safe = ", ".join(f"{k} {v:,}" for k, v in s["fail_safe"].items())
    not_fired = ", ".join(f"{NOT_FIRED_WHY.get(k, k)} {n:,}" for k, n in s["rejects_not_fired"].items())
    print(f"  rejects {s['rejects']:,}" + (f" (not fired: {not_fired})" if not_fired else "")
          + f"; fail-safe {sum(s['fail_safe'].values()):,}"
          + (f" ({fail_safe})" if fail_safe else ""))
    print("  classes: " + ", ".join(f"{k} {v:,}" for k, v in s["classes"].items()))
    lat = s["latency_decided"]
    if lat["n"]:
        print(f"  latency of the {lat['n']:,} decided: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, "
              f"p99.9 {lat['p99_9_ms']:.2f} ms, max {lat['max_ms']:.2f} ms")
    if parts := s["latency_parts"]:
        print("  where it went, p50 / max: " + ", ".join(
            f"{words} {parts[part]['p50_ms']:.2f} / {parts[part]['max_ms']:.2f} ms" for part, words in
            (("wait", "waiting for the decider"), ("inference", "inference"), ("rest", "the rest")))
            + " (preprocessing, the decision, the REJECT write)")
    if waited := s["fail_safe_wait"]:
        print(f"  the fail-safe ones had waited for the decider, p50 / max: {waited['p50_ms']:.2f} / "
              f"{waited['max_ms']:.2f} ms")
    print("  bundles: " + ", ".join(f"{k[:16]} ({v:,})" for k, v in s["bundles"].items()))
    if s["unwatched"] and (s["unwatched"]["holes"] or s["unwatched"]["clock_restarts"]):
        print("  " + _unwatched_line(s["unwatched"]))
    if s["log_first_id"] > 1:
        print(f"  (decisions before id {s['log_first_id']} were retired to keep the log within --log-max-mb)")


def _unwatched_line(u: dict) -> str:
    """The summary's line on the signal no window decided."""
    restarts = u["clock_restarts"]
    restarted = f"the device restarted its clock {restarts:,} time{'s' if restarts != 1 else ''}"
    if not u["holes"]:
        return restarted + " (what was lost then is not in the log)"
    longest = u["longest"]
    line = (f"signal no window decided: {_seconds(u['seconds'])} in {u['holes']:,} hole"
            f"{'s' if u['holes'] != 1 else ''} between windows (the longest {_seconds(longest['seconds'])}, ended "
            f"{_local(longest['after_time'])}); --unwatched lists them")
    return line + (f"; {restarted}" if restarts else "")


def _seconds(s: float) -> str:
    """``0.085 s``, ``1.88 s``, ``12 min 5 s``: to the millisecond while it is short."""
    return f"{s:.3g} s" if s < 60 else _duration(s)


HOLE_HEADER = f"{'began':23} {'ended':23} {'signal':>12} {'decisions':>21}"


def _format_hole(hole) -> str:
    ids = f"{hole.before_id}-{hole.after_id}"
    return f"{_local(hole.before_time):23} {_local(hole.after_time):23} {_seconds(hole.seconds):>12} {ids:>21}"


def _print_class_hint(label: str, classes: list[str]) -> None:
    """A --class no decision has: the classes the log does hold, a near spelling first (names are case-sensitive)."""
    if label in classes:
        return  # the class is logged, just not among the decisions the other filters keep
    near = [c for c in classes if c.lower() == label.lower()]
    print(f"  no decision in the log has class {label!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
          + "; its classes: " + (", ".join(classes) or "none yet"))


def _print_lane_hint(lane: int, lanes: list[int]) -> None:
    """A --lane no decision has: the lanes the log does hold (a vibration log has lane 0 alone)."""
    if lane not in lanes:
        print(f"  no decision in the log is on lane {lane}; its lanes: "
              + (", ".join(map(str, lanes)) if len(lanes) <= 12 else f"{lanes[0]}-{lanes[-1]}"))


def _print_holes(holes, summary: dict | None) -> None:
    """The --unwatched listing: the latest holes, or why there are none."""
    if summary is None:
        print("  --unwatched: this log holds no vibration decision (a line-scan runtime logs lost belt as "
              "fail-safe decisions: see --fail-safe)")
    elif not summary["holes"]:
        print("  no hole: every sample between the first and the last window matched was in a window")
    if holes:
        print(HOLE_HEADER)
        for hole in holes:
            print(_format_hole(hole))


def _open_csv(path: str):
    """The --csv file, opened for writing; one that cannot be is a clear error."""
    try:
        return open(path, "w", newline="")
    except OSError as exc:
        raise DrsnEdgeError(f"cannot write {path}: {exc.strerror or exc}; give --csv a file in a folder this user "
                            "may write, or - for the terminal") from exc


def _cmd_decisions(args: argparse.Namespace) -> int:
    from collections import deque
    from dataclasses import asdict, replace

    from edge.runtime.log_reader import (LogFilter, follow, iter_rows, logged_classes, logged_lanes, open_read_only,
                                         read_last, read_unwatched, summarize, write_csv)

    if args.unwatched and (args.csv or args.follow):
        raise DrsnEdgeError("--unwatched lists holes in the signal; --csv and --follow are for decisions: "
                            "choose one")
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise DrsnEdgeError(f"--since ({_local(args.since)}) is not before --until ({_local(args.until)}): no "
                            "decision can be in between; an age counts back from now, so --since 2h --until 1h is "
                            "the hour before the last")
    flt = LogFilter(since=args.since, until=args.until, rejects=args.rejects, not_fired=args.not_fired,
                    fail_safe=args.fail_safe, late_ms=args.late, label=args.label, lane=args.lane)
    db = open_read_only(args.log)
    try:
        def exported():
            return iter_rows(db, flt) if args.last is None else iter(read_last(db, flt, args.last))

        if args.csv == "-":
            try:
                write_csv(exported(), sys.stdout)
            except BrokenPipeError:  # `| head`: the reader has what it wanted
                sys.stdout = open(os.devnull, "w")
            return 0
        unwatched = read_unwatched(db, flt) if args.unwatched else None
        summary = summarize(db, flt, unwatched)
        listed = LISTED if args.last is None else args.last
        holes = deque(unwatched.holes if unwatched else (), maxlen=listed) if args.unwatched else None  # the latest N
        if args.json:
            if holes is not None:
                summary["unwatched_holes"] = [asdict(hole) for hole in holes]
            elif args.last is not None:  # asked for: the latest N as well, each with every column
                summary["latest"] = read_last(db, flt, args.last)
            print(json.dumps(summary, indent=2))
            return 0
        out = _open_csv(args.csv) if args.csv else None  # refused before anything is printed
        _print_log_summary(args.log, summary)
        if args.label and not summary["decisions"]:
            _print_class_hint(args.label, logged_classes(db))
        if args.lane is not None and not summary["decisions"] and summary["log_last_id"] is not None:
            _print_lane_hint(args.lane, logged_lanes(db))
        if out:
            with out:
                print(f"wrote {write_csv(exported(), out):,} decisions to {args.csv}")
            return 0
        if holes is not None:
            _print_holes(holes, summary["unwatched"])
            return 0
        rows = read_last(db, flt, listed) if listed else []
        if rows or args.follow:
            print(ROW_HEADER)
        for row in rows:
            print(_format_row(row))
        if args.follow:
            print("(following the log; Ctrl-C ends)", file=sys.stderr, flush=True)
            try:
                shown = max(summary["log_last_id"] or 0, rows[-1]["decision_id"] if rows else 0)
                for row in follow(db, replace(flt, after_id=shown), path=args.log):
                    print(_format_row(row), flush=True)
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        db.close()
