"""Smaller image models from trained ones: pruning with fine-tuning, and relational knowledge distillation.

Both read the source run's own split (its train and validation images), so the
compressed run is scored by ``evaluate`` on exactly the test images of its source.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from edge.errors import RunError
from edge.models import build_model, model_config
from edge.models.complexity import image_model_cost, parameter_count
from edge.train.device import describe, training_device
from edge.train.images import ImageTrainSettings, balanced_accuracy, fit_images, predict_images, run_images
from edge.train.pruning import asfp_rate, prune_resnet2d, soft_prune
from edge.train.runs import Run, echo, load_run, save_run, training_environment
from edge.train.trainer import seed_everything


def _image_run(path: str | Path) -> Run:
    run = load_run(path)
    if run.config["preprocessing"].get("input") != "image":
        raise RunError(f"{path} is not an image run (pruning and distillation work on image models)")
    if run.config["model"]["name"] == "ensemble":
        raise RunError(f"{path} is an ensemble: prune or distil its member runs, then ensemble them again "
                       "(or teach a student with `drsn-edge train --teacher` on each member)")
    return run


def _arrays(run: Run, data: str | Path | None):
    return {name: run_images(run, name, data) for name in ("train", "val")}


def _settings_of(run: Run, **overrides) -> ImageTrainSettings:
    """The source run's training settings (augmentation, learning rate, weights, input normalisation)
    with ``overrides``."""
    known = {f.name for f in dataclasses.fields(ImageTrainSettings)} - {"teachers"}  # the source's, not ours
    recorded = {k: v for k, v in run.config["training"].items() if k in known}
    recorded["normalization"] = run.config["preprocessing"]["normalization"]
    settings = ImageTrainSettings(**(recorded | overrides)).for_task(run.config["task"])
    # A run that averaged its last N epochs passes that on, to at most as many epochs as there are.
    return dataclasses.replace(settings, average_epochs=min(settings.average_epochs, settings.epochs))


def prune_run(run_dir: str | Path, out: str | Path, method: str = "l1", rounds: int = 3, rate: float = 0.3,
              epochs: int = 10, data: str | Path | None = None, threads: int | None = None, seed: int = 0,
              quiet: bool = False, device: str = "cpu") -> dict:
    """Prune a trained image run and fine-tune it (on ``device``); writes a new run whose history has every
    round.

    ``l1``: ``rounds`` times, remove ``rate`` of the filters by L1 norm, then fine-tune ``epochs``.
    ``asfp``: fine-tune ``epochs`` while soft-pruning toward ``rate`` (rising asymptotically), hard-prune
    at ``rate``, then fine-tune a quarter as long.
    """
    if method not in ("l1", "asfp"):
        raise RunError(f"--method must be l1 or asfp, got {method!r}")
    if not 0 < rate < 1 or rounds < 1:
        raise RunError(f"--rate must be in (0, 1) and --rounds at least 1 (got {rate}, {rounds})")
    on = training_device(device)
    run = _image_run(run_dir)
    rng = seed_everything(seed, threads, on)
    size = run.config["preprocessing"]["size"]
    arrays = _arrays(run, data)
    (tx, ty), (vx, vy) = arrays["train"], arrays["val"]
    classes = len(run.config["classes"])
    model = run.load_model()
    # Fine-tuning: half the training peak, and the best epoch of each round (soft pruning and an
    # average of weights do not mix).
    settings = _settings_of(run, epochs=epochs, seed=seed, average_epochs=0)
    settings = dataclasses.replace(settings, lr=settings.lr / 2)
    base = image_model_cost(model, size) | {"round": 0, "val_balanced_accuracy": balanced_accuracy(
        vy, predict_images(model, vx, settings.normalization))}
    history = [base]
    echo(quiet, f"baseline: {base['parameters']:,} parameters, {base['mflops']:.1f} MFLOPs, validation "
                f"{100 * base['val_balanced_accuracy']:.2f}%")
    if method == "l1":
        for r in range(1, rounds + 1):
            model = prune_resnet2d(model, rate)
            before = balanced_accuracy(vy, predict_images(model, vx, settings.normalization))
            fit = fit_images(model, tx, ty, vx, vy, settings, rng, classes, progress=not quiet, device=on)
            history.append(image_model_cost(model, size) | {
                "round": r, "val_balanced_accuracy_before_finetune": before,
                "val_balanced_accuracy": fit["best_val_score"], "finetune_seconds": fit["train_seconds"]})
            echo(quiet, f"round {r}: {history[-1]['parameters']:,} parameters, {history[-1]['mflops']:.1f} MFLOPs "
                        f"({100 * history[-1]['mflops'] / base['mflops']:.0f} %), validation "
                        f"{100 * before:.2f}% -> {100 * fit['best_val_score']:.2f}% after fine-tuning")
    else:
        fit = fit_images(model, tx, ty, vx, vy, settings, rng, classes, progress=not quiet,
                         on_epoch_end=lambda e: soft_prune(model, asfp_rate(e, epochs, rate)), device=on)
        soft_prune(model, rate)
        model = prune_resnet2d(model, rate)
        before = balanced_accuracy(vy, predict_images(model, vx, settings.normalization))
        tail = dataclasses.replace(settings, epochs=max(1, epochs // 4))
        fit2 = fit_images(model, tx, ty, vx, vy, tail, rng, classes, progress=not quiet, device=on)
        history.append(image_model_cost(model, size) | {
            "round": 1, "rate": rate, "val_balanced_accuracy_soft": fit["best_val_score"],
            "val_balanced_accuracy_before_finetune": before, "val_balanced_accuracy": fit2["best_val_score"],
            "finetune_seconds": fit["train_seconds"] + fit2["train_seconds"]})
        echo(quiet, f"asfp {rate}: {history[-1]['parameters']:,} parameters, {history[-1]['mflops']:.1f} MFLOPs, "
                    f"validation {100 * fit2['best_val_score']:.2f}%")
    config = json.loads(json.dumps(run.config))
    config["model"] = model.config.to_dict()
    config["environment"] = training_environment()  # where the fine-tuning ran, not the source run
    config["compression"] = {"kind": "pruning", "method": method, "rate": rate, "rounds": rounds if method == "l1" else 1,
                             "finetune_epochs": epochs, "source_run": str(run.path), "device": describe(on)}
    metrics = {"parameters": parameter_count(model), "pruning": history,
               "best_val_score": history[-1]["val_balanced_accuracy"]}
    save_run(Path(out), model, config, run.split, metrics)
    echo(quiet, f"wrote {out}/")
    return metrics


# ---------------------------------------------------------------- relational knowledge distillation

def _pairwise_distance(e: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(e, e)
    mean = d[d > 0].mean() if (d > 0).any() else d.new_tensor(1.0)
    return d / mean


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber loss between the normalised pairwise distances of the two embeddings (Park et al. 2019)."""
    with torch.no_grad():
        t = _pairwise_distance(teacher)
    return F.smooth_l1_loss(_pairwise_distance(student), t)


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber loss between the angles every triplet of samples forms in the two embeddings."""
    def angles(e: torch.Tensor) -> torch.Tensor:
        diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)   # (n, n, d): e_j - e_i
        return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)
    with torch.no_grad():
        t = angles(teacher)
    return F.smooth_l1_loss(angles(student), t)


def distill_run(teacher_dir: str | Path, out: str | Path, student: str = "resnet18", width: int | None = None,
                depth: int | None = None, epochs: int = 30, distance_weight: float = 25.0,
                angle_weight: float = 50.0, data: str | Path | None = None, threads: int | None = None,
                seed: int = 0, quiet: bool = False, device: str = "cpu") -> dict:
    """Train ``student`` (on ``device``) on the teacher run's split with cross-entropy plus RKD distance and
    angle losses on the pooled features (weights 25 and 50 as in the RKD paper)."""
    on = training_device(device)
    teacher_run = _image_run(teacher_dir)
    rng = seed_everything(seed, threads, on)
    size = teacher_run.config["preprocessing"]["size"]
    classes = len(teacher_run.config["classes"])
    teacher = teacher_run.load_model().eval().to(on)
    arrays = _arrays(teacher_run, data)
    (tx, ty), (vx, vy) = arrays["train"], arrays["val"]
    config = model_config(student, num_classes=classes, input_size=size, width=width, depth=depth)
    model = build_model(config)
    captured: dict[str, torch.Tensor] = {}
    model.classifier.register_forward_hook(lambda _m, inputs, _out: captured.__setitem__("f", inputs[0]))

    def relational_loss(x: torch.Tensor, _logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher.features(x)
        s = captured["f"]
        return distance_weight * rkd_distance(s, t) + angle_weight * rkd_angle(s, t)

    settings = _settings_of(teacher_run, epochs=epochs, seed=seed)
    echo(quiet, f"distilling {teacher_run.config['model']['name']} ({parameter_count(teacher):,} parameters) into "
                f"{student} ({parameter_count(model):,}), {epochs} epochs")
    fit = fit_images(model, tx, ty, vx, vy, settings, rng, classes, progress=not quiet, extra_loss=relational_loss,
                     device=on)
    run_config = json.loads(json.dumps(teacher_run.config))
    run_config["model"] = config.to_dict()
    run_config["environment"] = training_environment()
    run_config["training"] = settings.to_dict() | {"threads": torch.get_num_threads(), "device": describe(on)}
    run_config["compression"] = {"kind": "distillation", "method": "rkd", "teacher_run": str(teacher_run.path),
                                 "distance_weight": distance_weight, "angle_weight": angle_weight}
    metrics = {"parameters": parameter_count(model)} | {k: fit[k] for k in ("train_seconds", "best_epoch",
                                                                            "best_val_score", "history")}
    save_run(Path(out), model, run_config, teacher_run.split, metrics)
    echo(quiet, f"best validation epoch {fit['best_epoch']} ({100 * fit['best_val_score']:.2f}%); wrote {out}/")
    return metrics
