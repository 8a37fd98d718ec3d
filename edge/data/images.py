"""Image data sets: X-ray inspection patches (castings, fishbones), NEU strip steel, or any folder like them.

Layouts read (the class of an image comes from its folder or its name):

```
SET/train/<class>/*.jpg  SET/test/<class>/*.jpg     a published split (X-ray patches)
SET/<class>/*.jpg                                   one pool of images per class
SET/images/<class>_<n>.jpg  or  SET/<class>_<n>.jpg one pool, class in the name (NEU)
```

Copies are the trap of these sets (the castings hold 707 identical pairs, 230 across the
published split, one image 98 times): images are grouped by the sha256 of their
pixels' file, every group is kept once, and a group never sits on two sides of a
split.  Variants of one source patch (fishbones: ``BN0002_0101`` and ``N0002_0101``)
share a group too, by the name's series index, so they also stay on one side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.data.cwru import file_sha256
from edge.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
#: Task name -> (folder under the data root, default input size).
IMAGE_TASKS: dict[str, tuple[str, int]] = {
    "xray-castings": ("xray/castings", 32),
    "xray-fishbones": ("xray/fishbones", 64),
    "neu": ("neu", 64),
}
SPLITS = ("train", "val", "test")
#: An image named for its class, ``<class>_<n>`` (NEU: ``crazing_12.jpg``).
NAMED_FOR_CLASS = re.compile(r"(.+)_(\d+)")


@dataclass
class ImageItem:
    path: Path
    label: str
    label_index: int
    published_split: str | None   # "train" / "test" when the set ships a split
    sha256: str
    group: str                    # items of one group always land on the same side
    copies: int = 1               # identical files folded into this one


@dataclass
class ImageSet:
    name: str
    root: Path
    classes: tuple[str, ...]
    items: list[ImageItem]
    notes: list[str] = field(default_factory=list)
    duplicates_removed: int = 0
    conflicting_labels: int = 0

    def counts(self) -> dict[str, int]:
        return {c: sum(1 for i in self.items if i.label == c) for c in self.classes}

    def by_name(self) -> dict[str, ImageItem]:
        """The images by their path below ``root``: the names a run's split records."""
        return {str(item.path.relative_to(self.root)): item for item in self.items}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def series_group(path: Path, label: str, digest: str) -> str:
    """The source patch a file name points at, within its class: ``BN0002_0101`` -> ``class/0002_0101``
    (variant prefix letters dropped); a name without series and index is its own group."""
    match = re.fullmatch(r"[A-Za-z]*(\d+)_(\d+)", path.stem)
    return f"{label}/{match.group(1)}_{match.group(2)}" if match else digest


def label_of(relative: Path) -> str:
    """The class of an image from its path under a set's root, by the layouts :func:`find_images` reads:
    its class folder, else its name's prefix (``crazing_12.jpg``)."""
    if relative.parent.name not in ("", "images"):
        return relative.parent.name
    match = NAMED_FOR_CLASS.fullmatch(relative.stem)
    return match.group(1) if match else relative.stem


def find_images(root: Path) -> list[tuple[Path, str, str | None]]:
    """(file, class, published split) for every image under ``root``, whatever the layout."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; point --data at the data root (which holds xray/ "
                        "and neu/) or at a folder of images in class folders")
    found: list[tuple[Path, str, str | None]] = []
    split_dirs = [root / s for s in ("train", "test") if (root / s).is_dir()]
    if split_dirs:
        for split_dir in split_dirs:
            for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
                found += [(p, class_dir.name, split_dir.name) for p in _images_in(class_dir)]
        return found
    pool = root / "images" if (root / "images").is_dir() else root
    class_dirs = sorted(d for d in pool.iterdir() if d.is_dir())
    if class_dirs:
        for class_dir in class_dirs:
            found += [(p, class_dir.name, None) for p in _images_in(class_dir)]
        return found
    for p in _images_in(pool):
        match = NAMED_FOR_CLASS.fullmatch(p.stem)
        if not match:
            raise DataError(f"{p.name}: cannot tell its class (expected <class>_<n>{p.suffix} or a class folder)")
        found.append((p, match.group(1), None))
    return found


def load_image_set(root: str | Path, name: str | None = None, min_classes: int = 2) -> ImageSet:
    """Every image of a set, deduplicated by content; classes sorted by name (``class_0`` < ``class_1``).

    A set to train on needs two classes; one to score a run on may hold a single one
    (``min_classes=1``: a folder of defective parts alone).
    """
    root = Path(root)
    found = find_images(root)
    if not found:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    classes = tuple(sorted({label for _, label, _ in found}))
    if len(classes) < min_classes:
        raise DataError(f"{root}: {len(classes)} class found ({', '.join(classes)}); a classifier needs two or more")
    by_hash: dict[str, list[tuple[Path, str, str | None]]] = {}
    for entry in found:
        by_hash.setdefault(file_sha256(entry[0]), []).append(entry)
    items: list[ImageItem] = []
    conflicts = 0
    notes: list[str] = []
    for digest, copies in by_hash.items():
        labels = {label for _, label, _ in copies}
        if len(labels) > 1:
            conflicts += 1
            notes.append(f"{copies[0][0].name}: identical files carry different classes ({', '.join(sorted(labels))});"
                         " left out")
            continue
        # copies that straddle the published split are kept on the test side (the benchmark keeps its
        # size; training loses the copy, as usual when a training set is cleaned of test images)
        keep = next((c for c in copies if c[2] == "test"), copies[0])
        path, label, split = keep
        items.append(ImageItem(path, label, classes.index(label), split, digest, series_group(path, label, digest),
                               len(copies)))
    items.sort(key=lambda i: str(i.path))
    consistent = [c for c in by_hash.values() if len({x[1] for x in c}) == 1]
    removed = sum(len(c) - 1 for c in consistent)
    crossing = sum(1 for c in consistent if len({x[2] for x in c}) > 1)
    if removed:
        folded = sum(1 for c in consistent if len(c) > 1)
        notes.append(f"{removed} duplicate files folded into {folded} image{'s' if folded != 1 else ''}"
                     + (f"; {crossing} of them had copies on both sides of the published split: kept in test only"
                        if crossing else ""))
    return ImageSet(name or root.name, root, classes, items, notes, removed, conflicts)


@dataclass
class ImageSplit:
    """Indices into ``ImageSet.items`` per split, and how they were drawn (written into every run)."""

    train: list[int]
    val: list[int]
    test: list[int]
    method: str
    seed: int

    def indices(self, split: str) -> list[int]:
        if split not in SPLITS:
            raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return getattr(self, split)

    def describe(self, images: ImageSet) -> dict:
        names = list(images.by_name())  # in the order of images.items
        return {"method": self.method, "seed": self.seed, "duplicates_removed": images.duplicates_removed,
                "notes": images.notes,
                "counts": {s: {c: sum(1 for i in self.indices(s) if images.items[i].label == c)
                               for c in images.classes} for s in SPLITS},
                "files": {s: [names[i] for i in self.indices(s)] for s in SPLITS},
                # by content, so the run can be scored on another folder without the images it learnt from
                "sha256": {s: [images.items[i].sha256 for i in self.indices(s)] for s in SPLITS}}


def _grouped_draw(items: list[ImageItem], pool: list[int], fraction: float, rng: np.random.Generator) -> list[int]:
    """About ``fraction`` of ``pool`` per class, whole groups at a time (stratified, group-aware)."""
    chosen: list[int] = []
    for label in sorted({items[i].label_index for i in pool}):
        members = [i for i in pool if items[i].label_index == label]
        groups: dict[str, list[int]] = {}
        for i in members:
            groups.setdefault(items[i].group, []).append(i)
        order = list(groups)
        rng.shuffle(order)
        target = round(fraction * len(members))
        taken: list[int] = []
        for g in order:
            if len(taken) >= target:
                break
            taken += groups[g]
        chosen += taken
    return sorted(chosen)


def split_images(images: ImageSet, val_fraction: float = 0.15, test_fraction: float = 0.15,
                 seed: int = 0) -> ImageSplit:
    """The published test split where there is one (validation drawn from train), else a stratified draw.

    Draws are per class and by group, so copies and variants of one image never straddle two splits.
    """
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"bad split fractions: validation {val_fraction}, test {test_fraction}")
    rng = np.random.default_rng(seed)
    every = list(range(len(images.items)))
    published = any(i.published_split for i in images.items)
    if published:
        test = [i for i in every if images.items[i].published_split == "test"]
        method = "published test split (deduplicated); validation drawn from train by group, stratified"
    else:
        test = _grouped_draw(images.items, every, test_fraction, rng)
        method = "stratified by class, seeded, by group"
    test_groups = {images.items[i].group for i in test}
    pool = [i for i in every if i not in set(test) and images.items[i].group not in test_groups]
    moved = len(every) - len(test) - len(pool)
    val = _grouped_draw(images.items, pool, val_fraction / (1 - (0 if published else test_fraction)), rng)
    train = sorted(set(pool) - set(val))
    if moved:
        method += f"; {moved} training images sharing a group with a test image left out"
    for name, part in (("train", train), ("val", val), ("test", test)):
        missing = [c for k, c in enumerate(images.classes) if not any(images.items[i].label_index == k for i in part)]
        if missing:
            raise DataError(f"{images.name}: the {name} split has no image of {', '.join(missing)}")
    return ImageSplit(train, val, sorted(test), method, seed)


def read_images(items: list[ImageItem], size: int | None = None) -> np.ndarray:
    """Grey images as float32 (N, 1, H, W) in [0, 1], resized (bilinear) to ``size`` x ``size`` when given."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for item in items:
        try:
            with Image.open(item.path) as img:
                grey = img.convert("L")
                if size and grey.size != (size, size):
                    grey = grey.resize((size, size), Image.BILINEAR)
                out.append(np.asarray(grey, dtype=np.float32) / 255.0)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{item.path}: not a readable image ({exc})") from exc
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise DataError(f"images of different sizes {sorted(shapes)}; pass a size to resize them")
    return np.stack(out)[:, None] if out else np.zeros((0, 1, size or 0, size or 0), np.float32)
