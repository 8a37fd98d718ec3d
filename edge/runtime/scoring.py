"""Score live decisions (from the decision log) against a stream's ground truth.

A vibration decision covers a sample span; it is scored against the record that span
lies in.  Windows that straddle two records (the stream moves from one to the next)
have no single true label and are counted apart, as are fail-safe decisions.  A
line-scan decision covers one patch of the belt: its encoder span and lane name it.
"""

from __future__ import annotations

import bisect
import sqlite3
from pathlib import Path


def _decisions(log_path: str | Path, kind: str, columns: str, since_id: int) -> list[tuple]:
    """``columns`` of the log's decisions of one ``kind``, numbered ``since_id`` or later."""
    db = sqlite3.connect(str(log_path))
    try:
        return db.execute(f"SELECT {columns} FROM decisions WHERE decision_id >= ? AND kind = ?",
                          (since_id, kind)).fetchall()
    finally:
        db.close()


def score_vibration(log_path: str | Path, truth: list[dict], since_id: int = 0) -> dict:
    starts = [t["first_sample"] for t in truth]
    rows = _decisions(log_path, "vibration", "span_start, span_end, class, fail_safe", since_id)
    correct = scored = straddling = fail_safe = 0
    for start, end, label, failed in rows:
        if failed:
            fail_safe += 1
            continue
        k = bisect.bisect_right(starts, start) - 1
        if k < 0 or end >= truth[k]["first_sample"] + truth[k]["samples"]:
            straddling += 1
            continue
        scored += 1
        correct += label == truth[k]["label"]
    return {"decisions": len(rows), "scored": scored, "correct": correct,
            "accuracy": correct / scored if scored else None, "straddling_records": straddling,
            "fail_safe": fail_safe}


def score_linescan(log_path: str | Path, truth: list[dict], reject_classes: list[str], since_id: int = 0) -> dict:
    """Each patch decision against the belt's patch at its encoder span and lane.

    Besides accuracy, what a line cares about: how many defective patches were rejected
    and how many good ones were (fail-safe decisions count as what they did).
    """
    patches = {(t["encoder_start"], t["encoder_end"], t["lane"]): t["label"] for t in truth}
    rows = _decisions(log_path, "linescan", "span_start, span_end, lane, class, reject, fail_safe", since_id)
    correct = scored = unmatched = fail_safe = 0
    defects = defects_rejected = good = good_rejected = 0
    for start, end, lane, label, reject, failed in rows:
        true = patches.get((start, end, lane))
        if true is None:  # a tile cut across two bands of patches (tile height or overlap unlike the patches)
            unmatched += 1
            continue
        defective = true in reject_classes
        defects += defective
        defects_rejected += defective and bool(reject)
        good += not defective
        good_rejected += not defective and bool(reject)
        if failed:
            fail_safe += 1
            continue
        scored += 1
        correct += label == true
    return {"decisions": len(rows), "scored": scored, "correct": correct,
            "accuracy": correct / scored if scored else None, "fail_safe": fail_safe, "unmatched": unmatched,
            "defects": defects, "defects_rejected": defects_rejected, "good": good, "good_rejected": good_rejected}
