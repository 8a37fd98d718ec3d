"""Distilling an ensemble of trained vibration runs into one model (Hinton et al., 2015).

Two models with different inputs (per-window z-score, physical units) err on
different windows, so their averaged softmax is more accurate across loads than
either; averaging them on the gateway would double the inference per window.  A
student trained on the teachers' averaged, softened outputs as well as the labels
can carry part of that into a single network.  Each teacher sees the same augmented
window as the student, through its own recorded normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.errors import DataError
from edge.train.evaluate import logits


@dataclass
class TeacherEnsemble:
    models: list[nn.Module]
    normalizations: list[str]

    @classmethod
    def from_runs(cls, runs: list[str | Path], classes: list[str], window: int) -> "TeacherEnsemble":
        """Load the teacher runs; each must know the same classes, in order, and read windows of the same length."""
        from edge.train.runs import load_run

        models, normalizations = [], []
        for path in runs:
            run = load_run(path)
            pre = run.config["preprocessing"]
            if pre.get("input") == "image" or "window" not in pre:
                raise DataError(f"teacher {path} is not a vibration run")
            if list(run.config["classes"]) != list(classes):
                raise DataError(f"teacher {path} has classes {run.config['classes']}, the student {list(classes)}")
            if pre["window"] != window:
                raise DataError(f"teacher {path} reads windows of {pre['window']} samples, the student {window}")
            models.append(run.load_model())
            normalizations.append(pre["normalization"])
        return cls(models, normalizations)

    def soft_targets(self, raw: np.ndarray, temperature: float) -> torch.Tensor:
        """Mean over teachers of softmax(logits / T) on windows in raw units (N, L)."""
        probs = [F.softmax(torch.from_numpy(logits(model, raw, norm)) / temperature, dim=1)
                 for model, norm in zip(self.models, self.normalizations)]
        return torch.stack(probs).mean(0)


def distillation_loss(student_logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teachers || student) at temperature T, scaled by T^2 so its gradients keep the hard loss's size."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_student, soft, reduction="batchmean") * temperature ** 2
