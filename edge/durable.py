"""Files written so that a power cut leaves the old version or the new one, never a torn one.

A gateway loses power when its line does, a workstation during a night's training.  A
rename can reach the disk before the data it names unless that data is flushed first; a
bundle, service unit or TensorRT engine left empty that way keeps the service from
starting at all, a run left so has lost its model.  So each is written beside its
place, flushed, renamed over it, and the rename flushed too (its directory).
"""

from __future__ import annotations

import os
from pathlib import Path


def sync(path: Path) -> None:
    """Flush a file's data, or a directory's entries (the names renamed or linked in it), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(directory: Path) -> None:
    """Flush every file and directory under ``directory``, and ``directory`` itself."""
    for folder, _, files in os.walk(directory):
        for name in files:
            sync(Path(folder) / name)
        sync(Path(folder))


def replace(staged: Path, path: Path) -> None:
    """Rename ``staged`` over ``path`` and flush the rename (their directory)."""
    staged.replace(path)
    sync(path.parent)


def stage(path: Path, data: bytes) -> Path:
    """Write ``data`` beside ``path`` (``path.new``), flushed, ready to be renamed over it with :func:`replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".new")
    staging.write_bytes(data)
    sync(staging)
    return staging


def write_atomically(path: str | Path, data: bytes) -> None:
    """Write ``path`` whole or not at all, even across a power cut: a new file renamed over the old one."""
    path = Path(path)
    replace(stage(path, data), path)
