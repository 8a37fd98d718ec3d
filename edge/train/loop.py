"""Pieces every training loop here shares: the optimiser and schedule, one step, the best epoch kept."""

from __future__ import annotations

import copy

import torch
from torch import nn


def one_cycle(model: nn.Module, lr: float, weight_decay: float, total_steps: int):
    """AdamW with a one-cycle schedule peaking at ``lr`` after 15 % of the steps."""
    optimizer = torch.optim.AdamW((p for p in model.parameters() if p.requires_grad), lr=lr,
                                  weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 1),
                                                   pct_start=0.15)
    return optimizer, schedule


def step(optimizer, schedule, loss: torch.Tensor) -> float:
    """Back-propagate ``loss``, update, advance the schedule; returns the loss value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    return loss.item()


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
