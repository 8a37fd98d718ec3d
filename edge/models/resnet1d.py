"""1-D residual networks for vibration windows: DRSN-CW / DRSN-CS / SARSN and the plain baseline.

One architecture, four variants that differ only in the shrinkage inside each
residual unit, so the DRSN-versus-ResNet comparison is an honest ablation.
A wide strided stem (as in WDCNN) turns the raw window into a short feature map
cheaply; pre-activation residual units (BN-ReLU-Conv x2, shrinkage, + shortcut)
follow, as in the DRSN paper.
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
    extra: dict = field(default_factory=dict)



class ResidualUnit1d(nn.Module):
    """Pre-activation residual unit; with shrinkage it is the DRSN's RSBU."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, shrinkage: str):
        super().__init__()
        pad = kernel // 2
        self.bn1 = nn.BatchNorm1d(cin)
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
        self.config = config
        w = config.width
        self.stem = nn.Sequential(
            nn.Conv1d(config.in_channels, w, config.stem_kernel, stride=config.stem_stride,
                      padding=(config.stem_kernel - config.stem_stride) // 2, bias=False),
            nn.BatchNorm1d(w),
            nn.ReLU(inplace=True),
        )
        units = []
        cin = w
        for stage in range(config.stages):
            cout = w * 2 ** stage
            for i in range(config.depth):
                units.append(ResidualUnit1d(cin, cout, 2 if i == 0 else 1, config.kernel, config.shrinkage))
                cin = cout
        self.units = nn.Sequential(*units)
        self.head_bn = nn.BatchNorm1d(cin)
        self.classifier = nn.Linear(cin, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.units(self.stem(x))
        x = torch.relu(self.head_bn(x)).mean(dim=-1)
        return self.classifier(x)
