"""Two-phase training of the DCA-CNN baseline.

1. The time and wavelet branches learn with their own linear heads (half the epochs).
2. DCA is fitted in closed form on their features of augmented training windows
   (every feature-map position is one sample carrying its window's label), the
   branches are frozen, and the fusion CNN and classifier learn (the other half).

The step budget is the same as for the residual networks, so the comparison is fair.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from edge.data.preprocess import normalize
from edge.data.splits import RandomWindowSampler
from edge.models.dcacnn import DcaCnn, dca_projection
from edge.train.device import CPU
from edge.train.trainer import TrainSettings, augment, fit

DCA_WINDOWS = 2048   # training windows whose features fit the DCA projection


@torch.no_grad()
def fit_dca_fusion(model: DcaCnn, sampler: RandomWindowSampler, settings: TrainSettings,
                   rng: np.random.Generator, windows: int = DCA_WINDOWS) -> dict:
    """Fit the DCA projections on branch features of (augmented) training windows."""
    model.eval()
    feats_t, feats_w, labels = [], [], []
    for start in range(0, windows, settings.batch_size):
        x, y = sampler.draw(min(settings.batch_size, windows - start))
        x = normalize(augment(x, settings, rng), settings.normalization)
        t, w = model.branch_features(torch.from_numpy(x).unsqueeze(1))
        feats_t.append(t.permute(0, 2, 1).reshape(-1, t.shape[1]).numpy())
        feats_w.append(w.permute(0, 2, 1).reshape(-1, w.shape[1]).numpy())
        labels.append(np.repeat(y, t.shape[-1]))
    y_all = np.concatenate(labels)
    (wt, bt), (ww, bw) = dca_projection(np.concatenate(feats_t), y_all, np.concatenate(feats_w),
                                        model.fusion.rank)
    model.fusion.set_projection("time", wt, bt)
    model.fusion.set_projection("wave", ww, bw)
    return {"windows": windows, "samples": int(y_all.shape[0]), "rank": model.fusion.rank}


def fit_dca_cnn(model: DcaCnn, sampler: RandomWindowSampler, val_x: np.ndarray, val_y: np.ndarray,
                settings: TrainSettings, rng: np.random.Generator, progress: bool = True,
                device: torch.device = CPU) -> dict:
    """Both phases (each on ``device``; the DCA fit between them on the CPU); returns ``fit``'s summary with
    the history of both phases concatenated."""
    branch_epochs = max(settings.epochs // 2, 1)
    fused_epochs = max(settings.epochs - branch_epochs, 1)
    model.phase = "branches"
    first = fit(model, sampler, val_x, val_y, dataclasses.replace(settings, epochs=branch_epochs), rng, progress,
                device=device)
    dca = fit_dca_fusion(model, sampler, settings, rng)
    model.phase = "fused"
    model.freeze_branches()
    second = fit(model, sampler, val_x, val_y, dataclasses.replace(settings, epochs=fused_epochs), rng, progress,
                 device=device)
    history = [dict(h, phase="branches") for h in first["history"]]
    history += [dict(copy.deepcopy(h), phase="fused", epoch=h["epoch"] + branch_epochs) for h in second["history"]]
    return {"history": history, "best_epoch": second["best_epoch"] + branch_epochs,
            "best_val_score": second["best_val_score"], "dca": dca,
            "train_seconds": round(first["train_seconds"] + second["train_seconds"], 1)}
