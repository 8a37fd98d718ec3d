"""1-D residual networks for vibration windows: DRSN-CW / DRSN-CS / SARSN and the plain baseline.

One architecture, four variants that differ only in the shrinkage inside each
residual unit, so the DRSN-versus-ResNet comparison is an honest ablation.
A wide strided stem (as in WDCNN) turns the raw window into a short feature map
cheaply; pre-activation residual units (BN-ReLU-Conv x2, shrinkage, + shortcut)
follow, as in the DRSN paper.  ``instance_norm`` stages may normalise half their
channels per window instead of over the batch (IBN-a), so that a new operating
condition's feature statistics are measured on the window itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from edge.models.shrinkage import SHRINKAGE_KINDS, make_shrinkage


class JsonConfig:
    """``to_dict`` / ``from_dict`` for a config dataclass stored in a run's config.json."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
        return cls(**data)


@dataclass
class ModelConfig(JsonConfig):
    """Everything needed to rebuild a model; stored in every run as JSON."""

    name: str = "drsn1d-cw"
    shrinkage: str = "cw"
    in_channels: int = 1
    num_classes: int = 10
    width: int = 16            # channels of the first stage; doubled at every stage
    depth: int = 2             # residual units per stage
    stages: int = 3
    kernel: int = 3
    stem_kernel: int = 64
    stem_stride: int = 8
    instance_norm: int = 0     # stages (the stem with the first) whose first BatchNorm is IBN-a; 0: none
    extra: dict = field(default_factory=dict)


class InstanceBatchNorm1d(nn.Module):
    """IBN-a (Pan et al., ECCV 2018): half the channels normalised per window, the other half over the batch.

    Instance normalisation measures each window's own feature statistics, at training and
    on the gateway alike, so a shift of those statistics (a new load or speed) is taken
    out where it arises; the batch-normalised half keeps what the statistics tell apart.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.split = (channels // 2, channels - channels // 2)
        self.instance = nn.InstanceNorm1d(self.split[0], affine=True)
        self.batch = nn.BatchNorm1d(self.split[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_window, over_batch = torch.split(x, self.split, dim=1)
        return torch.cat([self.instance(per_window), self.batch(over_batch)], dim=1)


def batch_norm_1d(channels: int, instance: bool) -> nn.Module:
    """The unit's normalisation: BatchNorm, or IBN-a where ``instance``."""
    return InstanceBatchNorm1d(channels) if instance else nn.BatchNorm1d(channels)


class ResidualUnit1d(nn.Module):
    """Pre-activation residual unit; with shrinkage it is the DRSN's RSBU."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, shrinkage: str, instance_norm: bool = False):
        super().__init__()
        pad = kernel // 2
        self.bn1 = batch_norm_1d(cin, instance_norm)
        self.conv1 = nn.Conv1d(cin, cout, kernel, stride=stride, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, kernel, stride=1, padding=pad, bias=False)
        self.shrink = make_shrinkage(shrinkage, cout, spatial_dims=1)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv1d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(out)))
        return self.shrink(out) + self.shortcut(x)


class ResNet1d(nn.Module):
    """Stem, ``stages`` x ``depth`` residual units, global average pooling, linear classifier.

    Input (N, in_channels, L), output logits (N, num_classes).  Any L >= stem_kernel works.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.shrinkage not in SHRINKAGE_KINDS:
            raise ValueError(f"unknown shrinkage {config.shrinkage!r}; choose one of {', '.join(SHRINKAGE_KINDS)}")
        if min(config.width, config.depth, config.stages, config.num_classes) < 1:
            raise ValueError(f"width, depth, stages and num_classes must be >= 1: {config}")
        if not 0 <= config.instance_norm <= config.stages:
            raise ValueError(f"instance_norm must be between 0 and the {config.stages} stages, "
                             f"got {config.instance_norm}")
        if config.instance_norm and config.width < 2:
            raise ValueError("instance_norm splits each normalisation's channels in two halves: width must be >= 2")
        self.config = config
        w = config.width
        self.stem = nn.Sequential(
            nn.Conv1d(config.in_channels, w, config.stem_kernel, stride=config.stem_stride,
                      padding=(config.stem_kernel - config.stem_stride) // 2, bias=False),
            batch_norm_1d(w, config.instance_norm > 0),
            nn.ReLU(inplace=True),
        )
        units = []
        cin = w
        for stage in range(config.stages):
            cout = w * 2 ** stage
            for i in range(config.depth):
                units.append(ResidualUnit1d(cin, cout, 2 if i == 0 else 1, config.kernel, config.shrinkage,
                                            instance_norm=stage < config.instance_norm))
                cin = cout
        self.units = nn.Sequential(*units)
        self.head_bn = nn.BatchNorm1d(cin)
        self.classifier = nn.Linear(cin, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.units(self.stem(x))
        x = torch.relu(self.head_bn(x)).mean(dim=-1)
        return self.classifier(x)
