"""What data drsn-edge can see: where to look by default, what each folder holds, whether it is intact."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

from edge.data.cwru import CWRU_RECORDS, file_sha256, read_cwru_mat
from edge.errors import DataError

#: Environment variable naming the data root (a folder holding cwru/, xray/, neu/).
DATA_ENV = "DRSN_EDGE_DATA"


def default_data_root() -> Path:
    """``$DRSN_EDGE_DATA``, else ``../shared/data`` or ``./data`` seen from the current directory."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    for candidate in (Path("../shared/data"), Path("data")):
        if candidate.is_dir():
            return candidate
    return Path("../shared/data")


def missing_data(path: Path, given: bool) -> DataError:
    """The error for a data folder that is not there, saying what to change: the path the user gave, or,
    for the default, where to point drsn-edge."""
    hint = ("check the path given to --data" if given else
            f"give --data, or set ${DATA_ENV} to the folder that holds cwru/, xray/ and neu/")
    return DataError(f"data folder {path} does not exist; {hint}")


def default_cwru_dir() -> Path:
    root = default_data_root()
    return root / "cwru" if (root / "cwru").is_dir() else root


def _read_sums(path: Path) -> dict[str, str]:
    """``SHA256SUMS`` (``<hash>  <relative path>``) as {relative path: hash}."""
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest
    return sums


def _verify(root: Path, sums: dict[str, str]) -> list[str]:
    problems = []
    for name, digest in sums.items():
        path = root / name
        if not path.is_file():
            problems.append(f"missing {name}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"sha256 mismatch {name}")
    return problems


def survey_cwru(folder: Path, check: bool = False) -> dict:
    """Which CWRU records (class x load) are present; with ``check``, hashes against records.csv, or, where
    no such list lies beside them, each record opened (a truncated copy shows either way)."""
    present = {label: {load: (folder / f"{number}.mat").is_file() for load, number in loads.items()}
               for label, loads in CWRU_RECORDS.items()}
    report = {"path": str(folder), "present": present,
              "files": sum(v for loads in present.values() for v in loads.values()), "problems": [],
              "checked_against": None}
    listing = folder / "records.csv"
    if check and listing.is_file():
        report["checked_against"] = listing.name
        with listing.open() as fh:
            for row in csv.DictReader(fh):
                path = folder / row["file"]
                if not path.is_file():
                    report["problems"].append(f"missing {row['file']}")
                elif file_sha256(path) != row["sha256"]:
                    report["problems"].append(f"sha256 mismatch {row['file']}")
    elif check:
        for loads in CWRU_RECORDS.values():
            for number in loads.values():
                if (folder / f"{number}.mat").is_file():
                    try:
                        read_cwru_mat(folder / f"{number}.mat", number)
                    except DataError as exc:
                        report["problems"].append(str(exc))
    return report


def survey_images(folder: Path, check: bool = False) -> dict:
    """Image counts per sub-folder; with ``check``, hashes against SHA256SUMS."""
    counts: dict[str, int] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
            key = str(path.parent.relative_to(folder))
            counts[key] = counts.get(key, 0) + 1
    report = {"path": str(folder), "images": counts, "problems": [], "tasks": {}}
    from edge.data.images import IMAGE_TASKS, load_image_set, split_images

    for task, (relative, _) in IMAGE_TASKS.items():
        sub = folder.parent / relative
        if sub.is_dir() and (sub == folder or folder in sub.parents):
            images = load_image_set(sub, name=task)
            split = split_images(images)
            report["tasks"][task] = {"distinct_images": len(images.items), "copies_folded": images.duplicates_removed,
                                     "train": len(split.train), "val": len(split.val), "test": len(split.test)}
    sums = folder / "SHA256SUMS"
    report["checked_against"] = sums.name if check and sums.is_file() else None
    if report["checked_against"]:
        report["problems"] = _verify(folder, _read_sums(sums))
    return report


def survey(root: Path, check: bool = False) -> dict:
    """Every data set found under ``root``."""
    found = {}
    cwru = root / "cwru" if (root / "cwru").is_dir() else root
    if any(cwru.glob("*.mat")):
        found["cwru"] = survey_cwru(cwru, check)
    for name in ("xray", "neu"):
        if (root / name).is_dir():
            found[name] = survey_images(root / name, check)
    return found


def format_survey(root: Path, found: dict, checked: bool = False) -> str:
    lines = [f"data root {root}"]
    if not found:
        lines.append("  no data set found here; pass --data or set $" + DATA_ENV)
    if "cwru" in found:
        c = found["cwru"]
        lines += [f"cwru: {c['files']} records in {c['path']}", f"  {'class':<10} load0 load1 load2 load3"]
        for label, loads in c["present"].items():
            cells = "".join(f"{'yes' if loads[load] else '-':>6}" for load in sorted(loads))
            lines.append(f"  {label:<10}{cells}")
    for name in ("xray", "neu"):
        if name in found:
            images = found[name]["images"]
            lines.append(f"{name}: {sum(images.values())} images in {found[name]['path']}")
            lines += [f"  {folder:<28}{n:>6}" for folder, n in images.items()]
            for task, t in found[name].get("tasks", {}).items():
                copies = f"{t['copies_folded']} {'copy' if t['copies_folded'] == 1 else 'copies'} folded"
                lines.append(f"  task {task}: {t['distinct_images']} distinct images ({copies}); split train "
                             f"{t['train']} / validation {t['val']} / test {t['test']}")
    for name, report in found.items():
        for problem in report["problems"]:
            lines.append(f"PROBLEM {name}: {problem}")
        if checked and not report["problems"]:
            lines.append(f"{name}: every file present and matching its sha256 ({report['checked_against']})"
                         if report["checked_against"] else
                         f"{name}: no list of hashes beside the files (records.csv, SHA256SUMS), so none was "
                         + ("compared; every record opens" if name == "cwru" else "compared"))
    return "\n".join(lines)
