"""Train and evaluate image runs: X-ray castings, X-ray fishbones, NEU strip steel (or any folder alike).

The split (see :mod:`edge.data.images`) folds copies and keeps them on one side; the
epoch is chosen on the validation images by balanced accuracy (the mean of per-class
recalls, since the deduplicated castings are imbalanced); the test images are scored
once, by ``evaluate``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import edge
from edge.data.cwru import file_sha256
from edge.data.images import IMAGE_TASKS, ImageSet, ImageSplit, load_image_set, read_images, split_images
from edge.data.preprocess import normalize
from edge.errors import DataError
from edge.models import IMAGE_MODELS, build_model, model_config
from edge.train.device import CPU, describe, device_of, to_device, to_numpy, training_device
from edge.train.loop import KeptWeights, Mixup, kept_description, one_cycle, step
from edge.train.metrics import classification_report
from edge.train.runs import load_run, load_state, save_run, training_environment
from edge.train.settings import IMAGE_LABEL_SMOOTHING
from edge.train.teachers import ImageTeacherEnsemble, with_teachers
from edge.train.trainer import seed_everything

#: How an image becomes the network's input unless a run says otherwise (runs before
#: ``normalization`` was a setting were all trained this way).
NORMALIZATION = "zscore-image"
WEIGHT_DECAY = 5e-4
#: Settings a task takes unless told otherwise, each chosen on validation images of its
#: training series (benchmarks/images_castings_variants.py; README, "Image models").  The
#: castings' flaws are a few grey levels deep on a background that changes from part to part:
#: the high-pass keeps the flaw alone, a stronger weight decay keeps the network simple, and
#: 90 epochs instead of 30 let it learn the flaws rather than the training series' patches.
TASK_DEFAULTS: dict[str, dict] = {"xray-castings": {"normalization": "highpass-image", "weight_decay": 0.05,
                                                    "epochs": 90}}
EPOCHS = 30
IMAGE_NORMALIZATIONS = ("zscore-image", "center-image", "highpass-image", "none")


@dataclass
class ImageTrainSettings:
    epochs: int | None = None         # None: the task's default (for_task)
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float | None = None   # None: the task's default (for_task)
    label_smoothing: float = IMAGE_LABEL_SMOOTHING
    mixup: float = 0.0                # Beta(a, a) mixing of image pairs and their labels (0 = off)
    sam: float = 0.0                  # sharpness-aware minimisation: radius rho of the weights' neighbourhood (0 = off)
    class_weights: str = "none"       # none | balanced (inverse class frequency) | gmean (per-class accuracy)
    flips: bool = True
    rotations: bool = False           # quarter turns (with flips: all 8 symmetries of the square)
    max_shift: float = 0.1            # fraction of the image size
    zoom: float = 0.0                 # magnification jitter: each image scaled by up to 1 +/- this (0 = off)
    blur: float = 0.0                 # unsharpness jitter: Gaussian blur of sigma up to this many px (0 = off)
    gamma: float = 0.0                # grey-level curve jitter: each image to the power exp(+/- this) (0 = off)
    gain: float = 0.2                 # intensity gain jitter, +/- fraction
    noise: float = 0.03               # std of added Gaussian noise, as a fraction of full scale
    normalization: str | None = None  # one of IMAGE_NORMALIZATIONS (edge.data.preprocess); None: the task's
    simulated_voids: float = 0.0      # binary flaw tasks: share of flawless training images given a void
    average_epochs: int = 0           # keep the weight average of the last N epochs, not the best one (0 = off)
    teachers: list = field(default_factory=list)  # image runs to distil from (edge.train.teachers)
    distill_weight: float = 0.5       # share of the loss on the teachers' soft targets
    distill_temperature: float = 2.0  # softmax temperature of teachers and student there
    seed: int = 0
    split_seed: int | None = None     # draws the validation images; None: ``seed`` (teachers must share a split)

    def for_task(self, task: str) -> "ImageTrainSettings":
        """These settings with every field left None filled in: the task's default, else every task's."""
        defaults = {"epochs": EPOCHS, "normalization": NORMALIZATION, "weight_decay": WEIGHT_DECAY} | \
            TASK_DEFAULTS.get(task, {})
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def to_dict(self) -> dict:
        return asdict(self)


def augment_images(x: np.ndarray, settings: ImageTrainSettings, rng: np.random.Generator) -> np.ndarray:
    """Flips, quarter turns, magnification, small shifts (edge-padded), unsharpness, grey-level curve, gain
    and offset jitter and noise, per image; (N, 1, S, S) in [0, 1]."""
    n, _, h, w = x.shape
    out = x.copy()
    if settings.flips:
        flip_h = rng.random(n) < 0.5
        flip_v = rng.random(n) < 0.5
        out[flip_h] = out[flip_h, :, :, ::-1]
        out[flip_v] = out[flip_v, :, ::-1, :]
    if settings.rotations and h == w:
        turns = rng.integers(0, 4, size=n)
        for k in (1, 2, 3):
            out[turns == k] = np.rot90(out[turns == k], k, axes=(2, 3))
    if settings.zoom > 0:
        most = np.log1p(settings.zoom)
        factors = np.exp(rng.uniform(-most, most, size=n))
        out = resample_images(out, _zoom_matrices(factors, h), _zoom_matrices(factors, w))
    if settings.max_shift > 0:
        pad = max(1, int(round(settings.max_shift * h)))
        padded = np.pad(out, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
        dy = rng.integers(0, 2 * pad + 1, size=n)
        dx = rng.integers(0, 2 * pad + 1, size=n)
        out = np.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if settings.blur > 0:
        sigma = rng.uniform(0, settings.blur, size=n)
        out = resample_images(out, _blur_matrices(sigma, h), _blur_matrices(sigma, w))
    if settings.gamma > 0:  # a detector's response, or a tube voltage, that bends the grey levels
        out = np.clip(out, 0, 1) ** np.exp(rng.uniform(-settings.gamma, settings.gamma, size=(n, 1, 1, 1)))
    if settings.gain > 0:
        gain = rng.uniform(1 - settings.gain, 1 + settings.gain, size=(n, 1, 1, 1))
        offset = rng.uniform(-settings.gain / 2, settings.gain / 2, size=(n, 1, 1, 1))
        out = out * gain + offset
    if settings.noise > 0:
        out = out + rng.normal(0, 1, size=out.shape) * rng.uniform(0, settings.noise, size=(n, 1, 1, 1))
    return np.ascontiguousarray(out, dtype=np.float32)


def resample_images(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Each image i of (N, 1, H, W) as ``rows[i] @ image @ cols[i].T``: a separable resampling, batched, with
    (N, H, H) matrices acting on the rows and (N, W, W) on the columns."""
    return rows[:, None] @ x @ np.swapaxes(cols, 1, 2)[:, None]


def _zoom_matrices(factors: np.ndarray, size: int) -> np.ndarray:
    """Linear interpolation that magnifies by each factor about the centre (edges held): as the
    geometric magnification of an X-ray set-up differs from one line to the next."""
    centre = (size - 1) / 2
    at = np.clip(centre + (np.arange(size)[None, :] - centre) / factors[:, None], 0, size - 1)
    below = np.floor(at).astype(int)
    above = np.minimum(below + 1, size - 1)
    share = at - below
    matrices = np.zeros((len(factors), size, size))
    images, rows = np.indices(at.shape)
    np.add.at(matrices, (images, rows, below), 1 - share)
    np.add.at(matrices, (images, rows, above), share)
    return matrices.astype(np.float32)


def _blur_matrices(sigmas: np.ndarray, size: int) -> np.ndarray:
    """Gaussian blur of each sigma (px) along one axis, renormalised at the edges: a detector or focal
    spot less sharp than the training lines'.  A sigma near 0 leaves the image as it is."""
    offsets = np.arange(size)[None, :, None] - np.arange(size)[None, None, :]
    weights = np.exp(-0.5 * (offsets / np.maximum(sigmas, 1e-3)[:, None, None]) ** 2)
    return (weights / weights.sum(axis=2, keepdims=True)).astype(np.float32)


#: Simulated voids: semi-axes and peak brightening, drawn uniformly.  Blow holes in the
#: castings' training defect patches are a few pixels across and brighten the metal
#: around them by 1.6-3.3 % (10th-90th percentile, median 2.4 %); voids drawn from this
#: contrast range give the same median on the flawless training patches.
VOID_AXES_PX = (1.5, 5.0)
VOID_CONTRAST = (0.02, 0.05)
#: A void that brightens no pixel by this much (2 grey levels of 8 bits) cannot be seen
#: and the image stays flawless.
VOID_VISIBLE = 2 / 255


def simulate_voids(x: np.ndarray, y: np.ndarray, share: float, rng: np.random.Generator,
                   flaw: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Give a ``share`` of the flawless images (label != ``flaw``) a visible void, and the flaw's label.

    A void (a blow hole) shortens the X-ray's path through the metal, so more radiation
    reaches the detector behind it: the image brightens by exp(mu * depth), with depth
    the void's thickness along the beam, here an ellipsoid of random size, orientation,
    position and contrast (Beer-Lambert, as in defect simulation for X-ray testing).
    It teaches the flaw itself, on every kind of background, rather than the look of
    the patches that happened to hold flaws.  (N, 1, S, S) in [0, 1].
    """
    x, y = x.copy(), y.copy()
    chosen = np.flatnonzero((y != flaw) & (rng.random(y.shape[0]) < share))
    if chosen.size == 0:
        return x, y
    h, w = x.shape[2:]
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in chosen:
        a, b = rng.uniform(*VOID_AXES_PX, size=2)
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0.25, 0.75, size=2) * (h, w)
        u = (cols - cx) * np.cos(angle) + (rows - cy) * np.sin(angle)
        v = -(cols - cx) * np.sin(angle) + (rows - cy) * np.cos(angle)
        depth = np.sqrt(np.clip(1 - (u / a) ** 2 - (v / b) ** 2, 0, None))  # 0..1, the ellipsoid's thickness
        gain = np.exp(np.log1p(rng.uniform(*VOID_CONTRAST)) * depth)
        brighter = np.minimum(x[i, 0] * gain, 1.0)
        if (brighter - x[i, 0]).max() >= VOID_VISIBLE:  # not lost in a saturated (or black) region
            x[i, 0], y[i] = brighter, flaw
    return x, y


def model_inputs_images(x: np.ndarray, normalization: str = NORMALIZATION) -> np.ndarray:
    return np.ascontiguousarray(normalize(x, normalization), dtype=np.float32)


@torch.no_grad()
def image_logits(model: nn.Module, x: np.ndarray, normalization: str = NORMALIZATION,
                 batch: int = 256) -> np.ndarray:
    """The model's logits for raw images (N, 1, S, S) in [0, 1], normalised as the run was trained."""
    model.eval()
    device = device_of(model)
    return np.concatenate([to_numpy(model(to_device(model_inputs_images(x[i:i + batch], normalization), device)))
                           for i in range(0, x.shape[0], batch)])


def predict_images(model: nn.Module, x: np.ndarray, normalization: str = NORMALIZATION,
                   batch: int = 256) -> np.ndarray:
    return image_logits(model, x, normalization, batch).argmax(1)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def class_weights(y: np.ndarray, kind: str, num_classes: int, recall: np.ndarray | None = None) -> torch.Tensor | None:
    """``balanced``: inverse class frequency; ``gmean``: weights that grow as a class's validation
    recall falls (1 / recall, renormalised), which pushes the G-mean of recalls up."""
    if kind == "none":
        return None
    if kind == "balanced":
        counts = np.bincount(y, minlength=num_classes).astype(np.float64)
        w = counts.sum() / (num_classes * np.maximum(counts, 1))
    elif kind == "gmean":
        r = np.ones(num_classes) if recall is None else np.clip(recall, 0.05, 1.0)
        w = 1.0 / r
        w = w * num_classes / w.sum()
    else:
        raise DataError(f"--class-weights must be none, balanced or gmean, got {kind!r}")
    return torch.tensor(w, dtype=torch.float32)


def task_folder(task: str, data_root: str | Path) -> Path:
    if task not in IMAGE_TASKS:
        raise DataError(f"unknown image task {task!r}; choose one of {', '.join(IMAGE_TASKS)}")
    return Path(data_root) / IMAGE_TASKS[task][0]


def image_folder(task: str, data: str | Path) -> Path:
    """Where a task's images are: under ``data`` when it is a data root (``xray/castings``) or the folder
    above the task's (``castings``), else ``data`` itself, any folder of images in a layout
    :func:`edge.data.images.find_images` reads."""
    data = Path(data)
    below = task_folder(task, data)
    return next((d for d in (below, data / below.name) if d.is_dir()), data)


def load_task(task: str, data: str | Path, seed: int = 0) -> tuple[ImageSet, ImageSplit]:
    """The task's images (``data``: see :func:`image_folder`) and their split."""
    images = load_image_set(image_folder(task, data), name=task)
    return images, split_images(images, seed=seed)


def train_images(task: str, data: str | Path, out: str | Path, model_name: str = "resnet18",
                 size: int | None = None, settings: ImageTrainSettings | None = None, width: int | None = None,
                 depth: int | None = None, threads: int | None = None, quiet: bool = False,
                 init_state: str | Path | None = None, device: str = "cpu") -> dict:
    """Train one image model on ``device`` (``--device``) and write the run directory; returns its metrics."""
    if model_name not in IMAGE_MODELS:
        raise DataError(f"--model {model_name} is not an image model; choose one of {', '.join(IMAGE_MODELS)}")
    settings = (settings or ImageTrainSettings()).for_task(task)
    size = size or IMAGE_TASKS.get(task, (None, 64))[1]
    on = training_device(device)
    rng = seed_everything(settings.seed, threads, on)
    images, split = load_task(task, data, settings.seed if settings.split_seed is None else settings.split_seed)
    described = split.describe(images)
    teachers = (ImageTeacherEnsemble.from_runs(settings.teachers, list(images.classes), size, settings.normalization,
                                               {s: described["files"][s] for s in ("val", "test")})
                if settings.teachers else None)
    if settings.simulated_voids and len(images.classes) != 2:
        raise DataError(f"simulated voids make flaws of flawless images: they need a two-class task (flawless, "
                        f"flaw), and {task} has {len(images.classes)} classes")
    x = {s: read_images([images.items[i] for i in split.indices(s)], size) for s in ("train", "val")}
    y = {s: np.array([images.items[i].label_index for i in split.indices(s)], dtype=np.int64) for s in ("train", "val")}
    config = model_config(model_name, num_classes=len(images.classes), input_size=size, width=width, depth=depth)
    model = build_model(config)
    if init_state:
        load_state(model, Path(init_state),
                   unreadable=f"--init-state {init_state} cannot be read as a state dict of tensors (REASON)",
                   mismatch=f"--init-state {init_state} does not fit the {model_name} asked for (REASON); give "
                            "the state dict of the same model, --width, --depth, --size and classes")
    n_params = sum(p.numel() for p in model.parameters())
    if not quiet:
        print(f"training {model_name} ({n_params:,} parameters) on {task}: {len(split.train)} train / "
              f"{len(split.val)} validation images at {size}x{size}; {settings.epochs} epochs on {describe(on)}",
              flush=True)
        for note in images.notes:
            print(f"note: {note}", flush=True)
        if teachers:
            print(f"distilling from {len(settings.teachers)} teacher(s): {', '.join(map(str, settings.teachers))}",
                  flush=True)
    result = fit_images(model, x["train"], y["train"], x["val"], y["val"], settings, rng, len(images.classes),
                        progress=not quiet, teachers=teachers, device=on)
    run_config = {
        "drsn_edge_version": edge.__version__,
        "task": task,
        "model": config.to_dict(),
        "classes": list(images.classes),
        "data": {"dataset": task, "path": str(images.root), "images": len(images.items),
                 "duplicates_removed": images.duplicates_removed, "notes": images.notes},
        "preprocessing": {"input": "image", "size": size, "normalization": settings.normalization,
                          "input_layout": "N,C,H,W", "grey": True},
        "training": settings.to_dict() | {"threads": torch.get_num_threads(), "device": describe(on),
                                          "init_state": str(init_state) if init_state else None},
        "environment": training_environment(),
    }
    metrics = {"parameters": n_params} | {k: result[k] for k in ("train_seconds", "best_epoch", "best_val_score",
                                                                  "history")}
    save_run(Path(out), model, run_config, described, metrics)
    if not quiet:
        kept = kept_description(result["best_epoch"], settings.average_epochs)
        print(f"{kept} (balanced accuracy {result['best_val_score']:.4f}) after {result['train_seconds']:.0f} s; "
              f"wrote {out}/", flush=True)
    return metrics


def fit_images(model: nn.Module, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
               settings: ImageTrainSettings, rng: np.random.Generator, num_classes: int,
               progress: bool = True, extra_loss=None, on_epoch_end=None,
               teachers: ImageTeacherEnsemble | None = None, device: torch.device = CPU) -> dict:
    """Train in place, keep the best validation epoch (balanced accuracy).

    With ``average_epochs`` N, the model is instead the average of its weights at the end of
    the last N epochs (``WeightAverage``; BatchNorm measured again on training batches), and
    validation only reports.  ``extra_loss(x, logits)`` adds a term (relational distillation)
    to the cross-entropy; with ``teachers``, ``distill_weight`` of the loss is the distance to
    their softened mean output on the same augmented images, the rest the loss on the labels.
    With ``mixup``, each batch is mixed with itself in a new order (``Mixup``), labels and soft targets alike.
    With ``sam`` rho, every step takes its gradient at the worst weights within rho (``step``).
    ``on_epoch_end(epoch)`` runs after each epoch's steps, before validation (soft pruning,
    which an average of weights would undo, so the two do not mix).  The network trains on ``device``
    and is handed back on the CPU.
    """
    if settings.average_epochs and on_epoch_end is not None:
        raise ValueError("an average of weights would undo what on_epoch_end does to them; use one or the other")
    model.to(device)
    if teachers is not None:
        teachers.to(device)
    steps = max(1, int(np.ceil(train_x.shape[0] / settings.batch_size)))
    optimizer, schedule = one_cycle(model, settings.lr, settings.weight_decay, settings.epochs * steps)

    def shuffled_batches() -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        """One pass over the training images in a new order, as the network sees them in training
        (voids, augmentation, normalisation); a last batch of one image is left out."""
        order = rng.permutation(train_x.shape[0])
        for s in range(steps):
            idx = order[s * settings.batch_size:(s + 1) * settings.batch_size]
            if idx.size < 2:
                continue
            xb, yb = train_x[idx], train_y[idx]
            if settings.simulated_voids:
                xb, yb = simulate_voids(xb, yb, settings.simulated_voids, rng)
            yield to_device(model_inputs_images(augment_images(xb, settings, rng), settings.normalization), device), yb

    recall = None
    history, keeper = [], KeptWeights(model, settings.epochs, settings.average_epochs)
    started = time.monotonic()
    bar = tqdm(total=settings.epochs * steps, desc="train", unit="step", disable=not progress, leave=False)
    for epoch in range(1, settings.epochs + 1):
        weights = class_weights(train_y, settings.class_weights, num_classes, recall)
        weights = None if weights is None else weights.to(device)
        loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=settings.label_smoothing)
        model.train()
        losses = []
        for xb, yb in shuffled_batches():
            soft = teachers.soft_targets(xb, settings.distill_temperature) if teachers is not None else None
            mix = Mixup(len(yb), settings.mixup, rng)
            xb, target = mix.mix(xb), to_device(yb, device)
            soft = None if soft is None else mix.mix(soft)

            def batch_loss(xb=xb, target=target, soft=soft, mix=mix) -> torch.Tensor:
                logits = model(xb)
                loss = mix.loss(loss_fn, logits, target)
                if extra_loss is not None:
                    loss = loss + extra_loss(xb, logits)
                if soft is not None:
                    loss = with_teachers(loss, logits, soft, settings.distill_weight, settings.distill_temperature)
                return loss

            losses.append(step(model, optimizer, schedule, batch_loss, settings.sam))
            bar.update(1)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        recall, accuracy, score = validate_images(model, val_x, val_y, settings.normalization, num_classes)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                        "val_accuracy": accuracy, "val_balanced_accuracy": score,
                        "elapsed_s": round(time.monotonic() - started, 1)})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=f"{score:.4f}")
        keeper.offer(model, epoch, score)
    bar.close()
    kept = keeper.finish(model, lambda: [xb for xb, _ in shuffled_batches()])
    if kept == "average":
        _, accuracy, score = validate_images(model, val_x, val_y, settings.normalization, num_classes)
        history.append({"epoch": "average", "epochs": keeper.average.epochs, "val_accuracy": accuracy,
                        "val_balanced_accuracy": score})
    else:
        score = keeper.best.score
    model.cpu()
    return {"history": history, "best_epoch": kept, "best_val_score": score,
            "train_seconds": round(time.monotonic() - started, 1)}


def validate_images(model: nn.Module, val_x: np.ndarray, val_y: np.ndarray, normalization: str,
                    num_classes: int) -> tuple[np.ndarray, float, float]:
    """Per-class recall on the validation images (1 for a class with none), accuracy, and balanced
    accuracy (the mean recall over the classes present): the score that chooses, since the
    deduplicated castings are imbalanced."""
    pred = predict_images(model, val_x, normalization)
    present = np.array([np.any(val_y == c) for c in range(num_classes)])
    recall = np.array([np.mean(pred[val_y == c] == c) if present[c] else 1.0 for c in range(num_classes)])
    return recall, float(np.mean(pred == val_y)), float(recall[present].mean())


def run_images(run, split_name: str, data: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw images (N, 1, S, S) in [0, 1] and labels of one split of an image run, as the run recorded it."""
    task = run.config["task"]
    images = load_image_set(image_folder(task, data) if data else Path(run.config["data"]["path"]), name=task)
    return split_of_run(run, images, split_name)


def split_of_run(run, images: ImageSet, split_name: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`run_images` of a set already loaded."""
    by_file = images.by_name()
    files = run.split["files"][split_name]
    missing = [f for f in files if f not in by_file]
    if missing:
        raise DataError(f"{len(missing)} images of the run's {split_name} split are not in {images.root} "
                        f"(first: {missing[0]}); point --data at the folder the run was trained on")
    items = [by_file[f] for f in files]
    classes = run.config["classes"]
    return (read_images(items, run.config["preprocessing"]["size"]),
            np.array([classes.index(item.label) for item in items], dtype=np.int64))


def holds_run_split(run, images: ImageSet) -> bool:
    """Whether ``images`` is the folder the run was split from (or a copy of it): every file of its split there."""
    held = images.by_name()
    return all(f in held for files in run.split["files"].values() for f in files)


def learnt_hashes(run) -> set[str]:
    """Content hashes of the images a run trained and validated on.

    Recorded in its split; a run from before they were is read back from the folder it trained on.
    """
    recorded = run.split.get("sha256")
    if recorded:
        return set(recorded["train"]) | set(recorded["val"])
    root = Path(run.config["data"]["path"])
    files = run.split["files"]["train"] + run.split["files"]["val"]
    if not all((root / f).is_file() for f in files):
        raise DataError(f"cannot tell which images {run.path} learnt from: its split names files in {root}, which "
                        "is not here as it trained; score it where that folder is, or train it again (a run "
                        "records its images' hashes)")
    return {file_sha256(root / f) for f in files}


def unseen_images(run, images: ImageSet) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every image of a set the run never learnt from (by content), its labels, and what was left out.

    Copies in the set are folded; an image the run trained or validated on, under whatever
    name, is left out, so the score is one of images new to the model.
    """
    classes = run.config["classes"]
    unknown = [c for c in images.classes if c not in classes]
    if unknown:
        raise DataError(f"{images.root}: class folders or names {', '.join(unknown)} are not classes of the run "
                        f"({', '.join(classes)})")
    learnt = learnt_hashes(run)
    items = [item for item in images.items if item.sha256 not in learnt]
    notes = images.notes + [f"{len(images.items) - len(items)} images the run trained or validated on left out "
                            "(by content)"]
    if not items:
        raise DataError(f"every image in {images.root} is one the run trained or validated on; nothing new to "
                        "score it on")
    return (read_images(items, run.config["preprocessing"]["size"]),
            np.array([classes.index(item.label) for item in items], dtype=np.int64), notes)


def evaluate_images(run_dir: str | Path, data: str | Path | None = None, split_name: str = "test",
                    threads: int | None = None) -> dict:
    """Accuracy, balanced accuracy, per-class recall and confusion matrix of an image run.

    On the folder it trained on, one split of it (test by default).  On any other folder of
    images in the run's classes, every image of it the run did not learn from.
    """
    run = load_run(run_dir)
    if threads:
        torch.set_num_threads(threads)
    started = time.monotonic()
    task = run.config["task"]
    images = load_image_set(image_folder(task, data) if data else run.config["data"]["path"], name=task,
                            min_classes=1)
    own = holds_run_split(run, images)
    if own:
        x, y = split_of_run(run, images, split_name)
        source, notes = split_name, run.config["data"]["notes"]
    elif split_name != "test":
        raise DataError(f"--split {split_name}: {data} is not the folder {run.path} was split from; on another "
                        "folder every image it did not learn from is scored")
    else:
        x, y, notes = unseen_images(run, images)
        source = str(images.root)
    pred = predict_images(run.load_model(), x, run.config["preprocessing"]["normalization"])
    report = classification_report(y, pred, tuple(run.config["classes"]))
    return {"run": str(run.path), "model": run.config["model"]["name"], "task": run.config["task"],
            "split": split_name if own else None, "source": source, "images": int(y.shape[0]),
            "accuracy": report["accuracy"], "balanced_accuracy": balanced_accuracy(y, pred),
            "classes": run.config["classes"], "report": report, "notes": notes,
            "seconds": round(time.monotonic() - started, 2)}


def format_image_evaluation(result: dict) -> str:
    r = result["report"]
    lines = [f"run {result['run']}  model {result['model']}  task {result['task']}",
             f"{result['images']} {result['split']} images (copies folded, none shared with training)"
             if result["split"] else f"{result['images']} images in {result['source']} the run never learnt from "
                                     "(copies folded)"]
    lines += [f"note: {n}" for n in result["notes"]]
    lines += ["", f"accuracy {100 * result['accuracy']:.2f}%   balanced accuracy "
                  f"{100 * result['balanced_accuracy']:.2f}%   macro-F1 {100 * r['macro_f1']:.2f}", "",
              f"{'class':<18}{'recall':>8}{'images':>8}"]
    for c in result["classes"]:
        rec = r["recall"][c]
        lines.append(f"{c:<18}{'-' if rec is None else f'{100 * rec:.1f}':>8}{r['support'][c]:>8}")
    lines += ["", "confusion matrix (rows true, columns predicted)",
              " " * 18 + "".join(f"{i:>6}" for i in range(len(result["classes"])))]
    for i, (c, row) in enumerate(zip(result["classes"], r["confusion"])):
        lines.append(f"{i} {c:<16}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
