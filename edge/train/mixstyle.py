"""MixStyle (Zhou et al., ICLR 2021): mix the feature statistics of two training windows.

A convolution's per-channel mean and spread over time carry the window's "style": for
vibration, how strongly the machine's structure rings, which the operating condition
changes.  With probability ``p`` per batch, the early layers' outputs are normalised per
window and channel and given a mix of their own statistics and another window's
(``lam`` from Beta(alpha, alpha)), so the later layers learn classes under styles between
those seen.  Training only: in eval mode (validation, export, the gateway) nothing changes,
and the hooks are removed once training ends, so the saved network is the plain one.
"""

from __future__ import annotations

import torch
from torch import nn


class MixStyle:
    """Forward hooks on ``model``'s stem and every residual unit but those of its last stage."""

    def __init__(self, model: nn.Module, p: float, alpha: float = 0.1, eps: float = 1e-6):
        if not (hasattr(model, "stem") and hasattr(model, "units") and hasattr(model, "config")):
            raise ValueError(f"MixStyle needs a residual network with a stem and units, not {type(model).__name__}")
        early = len(model.units) - model.config.depth  # the last stage's units see classes, not styles
        self.p, self.eps = p, eps
        self.beta = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha))
        self.handles = [m.register_forward_hook(self._mix) for m in [model.stem, *list(model.units)[:early]]]

    def _mix(self, module: nn.Module, inputs, out: torch.Tensor) -> torch.Tensor:
        if not module.training or out.shape[0] < 2 or torch.rand(()) >= self.p:
            return out
        mu = out.mean(dim=-1, keepdim=True).detach()
        sigma = (out.var(dim=-1, keepdim=True) + self.eps).sqrt().detach()
        lam = self.beta.sample((out.shape[0], 1, 1)).to(out.device)
        partner = torch.randperm(out.shape[0]).to(out.device)
        mixed_mu = lam * mu + (1 - lam) * mu[partner]
        mixed_sigma = lam * sigma + (1 - lam) * sigma[partner]
        return (out - mu) / sigma * mixed_sigma + mixed_mu

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
