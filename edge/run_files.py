"""A training run's directory, read without torch.

The build side loads a run's network (``edge.train.runs.load_run``); the gateway's demo and
on-device calibration only need its JSON files, to stream the data the run held out.  Both
read them here, so a missing, incomplete or corrupted run gets the same clear error on
either side.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edge.errors import RunError

RUN_FILES: tuple[str, ...] = ("model.pt", "config.json", "split.json", "metrics.json")


def split_fingerprint(split: dict) -> str:
    """The sha256 of a run's split (which data it trained, validated and held out), independent of formatting.

    A bundle records its run's: the demo and on-device calibration stream a run's held-out data,
    which is held out only from a model built from a run with this same split.
    """
    return hashlib.sha256(json.dumps(split, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_run_files(path: str | Path) -> dict[str, dict]:
    """``{"config.json": ..., "split.json": ..., "metrics.json": ...}`` of the run at ``path``, checked."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run directory {path} does not exist; train one with `drsn-edge train --out {path}`")
    missing = [name for name in RUN_FILES if not (path / name).is_file()]
    if missing:
        raise RunError(f"run {path} is incomplete (missing {', '.join(missing)}); was training interrupted?")
    try:
        return {name: json.loads((path / name).read_text()) for name in RUN_FILES if name.endswith(".json")}
    except json.JSONDecodeError as exc:
        raise RunError(f"run {path}: a JSON file is corrupted ({exc})") from exc
