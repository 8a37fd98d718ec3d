"""Pieces every training loop here shares: the optimiser and schedule, mixup, one step (plain or
sharpness-aware), the best epoch kept, or the average of the last epochs' weights."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from edge.train.device import device_of


def one_cycle(model: nn.Module, lr: float, weight_decay: float, total_steps: int):
    """AdamW with a one-cycle schedule peaking at ``lr`` after 15 % of the steps."""
    optimizer = torch.optim.AdamW((p for p in model.parameters() if p.requires_grad), lr=lr,
                                  weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 1),
                                                   pct_start=0.15)
    return optimizer, schedule


class Mixup:
    """Mixup (Zhang et al. 2018) of one batch: one weight ``lam`` from Beta(alpha, alpha) and a partner for
    every example; the inputs become ``lam * x + (1 - lam) * x[partner]``, and so do the soft targets and
    the loss on the labels.  With ``alpha`` 0 it mixes nothing and draws nothing from ``rng``."""

    def __init__(self, n: int, alpha: float, rng: np.random.Generator):
        self.lam, self.partner = (float(rng.beta(alpha, alpha)), torch.from_numpy(rng.permutation(n))) if alpha \
            else (1.0, None)

    def mix(self, batch: torch.Tensor) -> torch.Tensor:
        return batch if self.partner is None else self.lam * batch + (1 - self.lam) * self._partners(batch)

    def loss(self, loss_fn: Callable, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.partner is None:
            return loss_fn(logits, target)
        return self.lam * loss_fn(logits, target) + (1 - self.lam) * loss_fn(logits, self._partners(target))

    def _partners(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[self.partner.to(batch.device)]


def step(model: nn.Module, optimizer, schedule, batch_loss: Callable[[], torch.Tensor], sam: float = 0.0) -> float:
    """One update on one batch; returns the loss value.

    ``batch_loss()`` computes the batch's loss from the current weights and must draw nothing
    new (no augmentation, no random mixing): with ``sam`` rho > 0 it is called a second time
    at weights moved by rho along the gradient (``sharpness_aware_gradients``).
    """
    optimizer.zero_grad(set_to_none=True)
    loss = batch_loss()
    loss.backward()
    if sam:
        sharpness_aware_gradients(model, optimizer, batch_loss, sam)
    optimizer.step()
    schedule.step()
    return loss.item()


def sharpness_aware_gradients(model: nn.Module, optimizer, batch_loss: Callable[[], torch.Tensor],
                              rho: float) -> None:
    """Replace the gradients with those at the worst nearby weights (SAM, Foret et al. 2021).

    The weights are moved by ``rho`` along the normalised gradient, where the loss rises
    fastest; the gradient taken there steers towards minima that stay low in a whole
    neighbourhood, which is what holds up on data a little unlike the training data.  The
    weights are put back before the optimiser steps.  BatchNorm layers do not count the
    second pass in their running statistics: they see each batch once, as without SAM.
    """
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    scale = rho / (norm + 1e-12)
    with torch.no_grad():
        weights = [p.detach().clone() for p in params]
        for p in params:
            p.add_(p.grad * scale)
    optimizer.zero_grad(set_to_none=True)
    with running_statistics_held(model):
        batch_loss().backward()
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)


@contextmanager
def running_statistics_held(model: nn.Module) -> Iterator[None]:
    """Within it, the BatchNorm layers of ``model`` normalise by the batch, as in training, but leave
    their running statistics (and batch count) as they were."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class BestEpoch:
    """Keeps the weights of the best-scoring epoch (validation only) and puts them back at the end."""

    def __init__(self) -> None:
        self.score, self.epoch, self.state = -1.0, -1, None

    def offer(self, model: nn.Module, epoch: int, score: float) -> None:
        if score > self.score:
            self.score, self.epoch, self.state = score, epoch, copy.deepcopy(model.state_dict())

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)
        model.eval()


class WeightAverage:
    """Stochastic weight averaging (Izmailov et al. 2018) over the last epochs, with torch's ``swa_utils``.

    The average of the weights the schedule passes through at the end of each of the last
    epochs lies in a wider, flatter region of the loss than any one of them, which is what
    holds up when the operating condition moves.  BatchNorm statistics do not average: they
    are measured again on training batches (``finish``).
    """

    def __init__(self, model: nn.Module) -> None:
        self.average = torch.optim.swa_utils.AveragedModel(model)
        self.epochs: list[int] = []

    def offer(self, model: nn.Module, epoch: int) -> None:
        self.average.update_parameters(model)
        self.epochs.append(epoch)

    def finish(self, model: nn.Module, batches) -> None:
        """Put the averaged weights into ``model`` and re-measure its BatchNorm statistics on ``batches``."""
        model.load_state_dict(self.average.module.state_dict())
        torch.optim.swa_utils.update_bn(batches, model, device=device_of(model))
        model.eval()


class KeptWeights:
    """What a training keeps at its end: the best validation epoch (``BestEpoch``) or, with
    ``average_epochs`` N, the average of the weights at the end of the last N (``WeightAverage``)."""

    def __init__(self, model: nn.Module, epochs: int, average_epochs: int) -> None:
        if not 0 <= average_epochs <= epochs:
            raise ValueError(f"average_epochs must be between 0 (off) and the epochs ({epochs}), got {average_epochs}")
        self.epochs, self.average_epochs = epochs, average_epochs
        self.best = BestEpoch()
        self.average = WeightAverage(model) if average_epochs else None

    def offer(self, model: nn.Module, epoch: int, score: float) -> None:
        """After each epoch's validation."""
        if self.average is None:
            self.best.offer(model, epoch, score)
        elif epoch > self.epochs - self.average_epochs:
            self.average.offer(model, epoch)

    def finish(self, model: nn.Module, batches: Callable[[], Iterable[torch.Tensor]]) -> int | str:
        """Put the kept weights into ``model``; returns the epoch kept, or "average" (whose BatchNorm
        statistics are measured again on ``batches()``, drawn only then)."""
        if self.average is None:
            self.best.restore(model)
            return self.best.epoch
        self.average.finish(model, batches())
        return "average"


def kept_description(best_epoch: int | str, average_epochs: int) -> str:
    """What a training kept, for its closing message: the best validation epoch, or the average."""
    if best_epoch == "average":
        return f"the average of the last {average_epochs} epochs"
    return f"best validation epoch {best_epoch}"
