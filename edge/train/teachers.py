"""Distilling an ensemble of trained runs into one model (Hinton et al., 2015).

Two models with different inputs (per-window z-score, physical units), or two seeds
of one image model, err on different windows or images, so their averaged softmax is
more accurate than either; averaging them on the gateway would multiply the inference
per window or tile.  A student trained on the teachers' averaged, softened outputs as
well as the labels can carry part of that into a single network.  Each teacher sees
the same augmented input as the student: a vibration teacher through its own recorded
normalisation, an image teacher through the student's (which it must share).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.errors import DataError
from edge.train.device import device_of, to_device
from edge.train.evaluate import logits


def _teacher_run(path: str | Path, classes: list[str], image: bool):
    """A teacher's run, if it is of the student's kind (image or vibration) and knows its classes, in order."""
    from edge.train.runs import load_run

    run = load_run(path)
    pre = run.config["preprocessing"]
    if (pre.get("input") == "image") != image or (not image and "window" not in pre):
        raise DataError(f"teacher {path} is not {'an image' if image else 'a vibration'} run")
    if list(run.config["classes"]) != list(classes):
        raise DataError(f"teacher {path} has classes {run.config['classes']}, the student {list(classes)}")
    return run


class Teachers:
    """What both ensembles share: their networks, moved with the student's."""

    models: list[nn.Module]

    def to(self, device: torch.device) -> "Teachers":
        """The teachers on the student's device."""
        for model in self.models:
            model.to(device)
        return self


@dataclass
class TeacherEnsemble(Teachers):
    models: list[nn.Module]
    normalizations: list[str]
    # Record files a teacher trained on and the student does not: the student's scores there are not held out.
    other_records: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_runs(cls, runs: list[str | Path], classes: list[str], window: int, rate_hz: int | None = None,
                  channel: str | None = None, student_split: list[dict] = ()) -> "TeacherEnsemble":
        """Load the teacher runs: vibration runs of the same classes, in order, reading windows of the same
        length, rate and channel, none of which trained on a stretch of signal the student holds out.

        ``student_split``: the student's segments as its split.json lists them (file, split, start, stop), the
        form in which each teacher's run records its own.  A teacher that learned the student's validation
        segments would hand their answers to the student through its soft targets and flatter the score that
        keeps an epoch; one that learned its test segments would flatter every figure.  A teacher trained on
        records the student never sees (another load) is allowed, and named in ``other_records``: the student's
        scores on them are not held out.
        """
        held_out = [s for s in student_split if s["split"] != "train"]
        trained = {s["file"] for s in student_split if s["split"] == "train"}
        models, normalizations, other = [], [], {}
        for path in runs:
            run = _teacher_run(path, classes, image=False)
            pre = run.config["preprocessing"]
            if pre["window"] != window:
                raise DataError(f"teacher {path} reads windows of {pre['window']} samples, the student {window}")
            for name, theirs, ours in (("Hz", pre.get("rate_hz"), rate_hz), ("channel", pre.get("channel"), channel)):
                if ours is not None and theirs is not None and theirs != ours:
                    raise DataError(f"teacher {path} reads the {theirs} {name} signal, the student {ours}: "
                                    "train the student with its teachers' setting")
            learned = [s for s in run.split.get("segments", []) if s["split"] == "train"]
            for seg in held_out:
                hit = next((s for s in learned if s["file"] == seg["file"] and s["start"] < seg["stop"]
                            and seg["start"] < s["stop"]), None)
                if hit:
                    raise DataError(f"teacher {path} trained on samples {hit['start']}-{hit['stop']} of "
                                    f"{seg['file']}, where the student "
                                    f"{'validates' if seg['split'] == 'val' else 'tests'} on {seg['start']}-"
                                    f"{seg['stop']}: train the teacher with the student's split")
            if trained and (others := sorted({s["file"] for s in learned} - trained)):
                other[str(path)] = others
            models.append(run.load_model())
            normalizations.append(pre["normalization"])
        return cls(models, normalizations, other)

    def soft_targets(self, raw: np.ndarray, temperature: float) -> torch.Tensor:
        """Mean over teachers of softmax(logits / T) on windows in raw units (N, L), on the teachers' device."""
        return mean_softmax([to_device(logits(model, raw, norm), device_of(model))
                             for model, norm in zip(self.models, self.normalizations)], temperature)


SPLIT_NAMES = {"val": "validation"}


@dataclass
class ImageTeacherEnsemble(Teachers):
    models: list[nn.Module]

    @classmethod
    def from_runs(cls, runs: list[str | Path], classes: list[str], size: int, normalization: str,
                  held_out: dict[str, list[str]]) -> "ImageTeacherEnsemble":
        """Load the teacher runs: image runs of the same classes, input size and normalisation, none of
        which trained on an image the student holds out (``held_out``: split name -> image files).

        A teacher that learned the student's validation images would hand their answers to the
        student through its soft targets, and the validation score that keeps an epoch (and
        compares settings) would flatter it: teachers and student share one split
        (``split_seed``) where validation is drawn per seed.
        """
        models = []
        for path in runs:
            run = _teacher_run(path, classes, image=True)
            pre = run.config["preprocessing"]
            if (pre["size"], pre["normalization"]) != (size, normalization):
                raise DataError(f"teacher {path} reads {pre['size']} px images normalised {pre['normalization']}, "
                                f"the student {size} px {normalization}: give the student its teachers' settings")
            for name, files in held_out.items():
                seen = set(run.split["files"]["train"]) & set(files)
                if seen:
                    raise DataError(f"teacher {path} trained on {len(seen)} of the student's "
                                    f"{SPLIT_NAMES.get(name, name)} images "
                                    f"(first: {sorted(seen)[0]}); train the student on the teacher's split "
                                    f"(--split-seed {run.split['seed']})")
            with torch.random.fork_rng(devices=[]):  # building a network draws weights: not the student's
                models.append(run.load_model())
        return cls(models)

    def soft_targets(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """Mean over teachers of softmax(logits / T) on a batch as the student sees it (N, 1, S, S)."""
        with torch.no_grad():
            return mean_softmax([model(x) for model in self.models], temperature)


def mean_softmax(teacher_logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """The teachers' softened outputs, averaged: the student's soft target."""
    return torch.stack([F.softmax(z / temperature, dim=1) for z in teacher_logits]).mean(0)


def distillation_loss(student_logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teachers || student) at temperature T, scaled by T^2 so its gradients keep the hard loss's size."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_student, soft, reduction="batchmean") * temperature ** 2


def with_teachers(label_loss: torch.Tensor, student_logits: torch.Tensor, soft: torch.Tensor, weight: float,
                  temperature: float) -> torch.Tensor:
    """The loss a student trains on: ``weight`` of it on the teachers' soft targets, the rest on the labels."""
    return (1 - weight) * label_loss + weight * distillation_loss(student_logits, soft, temperature)
