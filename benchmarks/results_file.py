"""Where every benchmark leaves its figures: one JSON document under benchmarks/results/.

Each benchmark writes its document before it prints its table, so that a table that fails to print loses
no measurement.
"""
from __future__ import annotations

import json
from pathlib import Path


def write_results(doc: dict, out: Path) -> None:
    """Write ``doc`` as indented JSON to ``out`` (its folder made if need be) and say where it went."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
