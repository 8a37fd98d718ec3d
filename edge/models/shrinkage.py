"""Soft-threshold (shrinkage) modules of deep residual shrinkage networks.

DRSN (Zhao et al., IEEE TII 2020): a small sub-network learns a threshold per sample
from the feature map itself, ``tau = alpha * GAP(|x|)`` with
``alpha = sigmoid(FC-BN-ReLU-FC(GAP(|x|)))``, and features are soft-thresholded:
small (noise-like) activations are set to zero, large ones shrink by ``tau``.
Everything is written with Abs / ReduceMean / Gemm / Sigmoid / Mul / Relu so it
exports to ONNX without data-dependent control flow.
"""

from __future__ import annotations

import torch
from torch import nn

SHRINKAGE_KINDS: tuple[str, ...] = ("cw", "cs", "sarsn", "none")


def soft_threshold(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``sign(x) * max(|x| - tau, 0)`` written sign-free as ``relu(x - tau) - relu(-x - tau)``."""
    return torch.relu(x - tau) - torch.relu(-x - tau)


class ThresholdNet(nn.Module):
    """Learns thresholds from ``GAP(|x|)``: one per channel (``cw``) or one shared (``cs``)."""

    def __init__(self, channels: int, channel_wise: bool):
        super().__init__()
        self.channel_wise = channel_wise
        self.fc = nn.Sequential(
            nn.Linear(channels, channels),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            nn.Linear(channels, channels if channel_wise else 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Thresholds shaped to broadcast against ``x`` (N, C, *spatial)."""
        spatial = tuple(range(2, x.dim()))
        gap = x.abs().mean(dim=spatial)  # (N, C)
        alpha = self.fc(gap)
        tau = alpha * gap if self.channel_wise else alpha * gap.mean(dim=1, keepdim=True)
        return tau.reshape(tau.shape + (1,) * len(spatial))


class Shrinkage(nn.Module):
    """RSBU-CW (channel-wise) or RSBU-CS (channel-shared) soft thresholding."""

    def __init__(self, channels: int, channel_wise: bool = True):
        super().__init__()
        self.threshold = ThresholdNet(channels, channel_wise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return soft_threshold(x, self.threshold(x))


class SelfAdaptiveShrinkage(Shrinkage):
    """SARSN threshold (Huang et al., Algorithms 2023): a learned slope on the pass-through part.

    ``y = delta*x - tau`` for ``x > tau``, ``0`` inside ``[-tau, tau]``, ``delta*x + tau``
    below, with one ``delta`` per channel, initialised at 1 (plain soft thresholding).
    Written as ``delta*st + (delta-1)*tau*sign(st)`` with ``st`` the soft threshold.
    """

    def __init__(self, channels: int, spatial_dims: int = 1):
        super().__init__(channels, channel_wise=True)
        self.delta = nn.Parameter(torch.ones((1, channels) + (1,) * spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tau = self.threshold(x)
        st = soft_threshold(x, tau)
        return self.delta * st + (self.delta - 1.0) * tau * torch.sign(st)


def make_shrinkage(kind: str, channels: int, spatial_dims: int = 1) -> nn.Module:
    """The shrinkage module for ``kind`` (``none`` gives the plain residual unit)."""
    if kind == "cw":
        return Shrinkage(channels, channel_wise=True)
    if kind == "cs":
        return Shrinkage(channels, channel_wise=False)
    if kind == "sarsn":
        return SelfAdaptiveShrinkage(channels, spatial_dims)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown shrinkage {kind!r}; choose one of {', '.join(SHRINKAGE_KINDS)}")
