"""Shared fixtures: the real CWRU files (never copies of them) and tiny training settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cwru_dir() -> Path:
    if os.environ.get("DRSN_EDGE_DATA"):
        return Path(os.environ["DRSN_EDGE_DATA"]) / "cwru"
    return ROOT.parent / "shared" / "data" / "cwru"


@pytest.fixture(scope="session")
def cwru_dir() -> Path:
    path = _cwru_dir()
    if not (path / "105.mat").is_file():
        pytest.skip(f"CWRU data not found at {path}; set DRSN_EDGE_DATA to the data root")
    return path


@pytest.fixture(scope="session")
def cwru_load0(cwru_dir):
    """Load-0 records (10 classes), read and resampled once for the whole session."""
    from edge.data.cwru import load_cwru

    return load_cwru(cwru_dir, loads=(0,))
