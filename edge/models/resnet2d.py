"""ResNet-18 for grey images, with optional 2-D shrinkage (RSBU-CW, SARSN) in every residual block.

Sizes are explicit in the config (every stage's width, every block's inner width), so a
physically pruned network (fewer filters in real convolutions) is rebuilt from its
config alone and its weights load as plain tensors.  The stem follows the input size:
small patches (<= 64 px) keep full resolution (3x3, stride 1, no pooling, as for
CIFAR-sized inputs); larger images get the ImageNet stem (7x7 stride 2 + max-pool).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from edge.models.resnet1d import JsonConfig
from edge.models.shrinkage import SHRINKAGE_KINDS, make_shrinkage

INPUT_SIZES = (32, 64, 100, 200)


@dataclass
class ImageModelConfig(JsonConfig):
    """Everything needed to rebuild an image model; stored in every image run as JSON."""

    name: str = "resnet18"
    shrinkage: str = "none"
    in_channels: int = 1
    num_classes: int = 2
    input_size: int = 64
    stage_widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    inner_widths: list[int] | None = None    # per block, conv1's filters; None: the stage width (unpruned)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.stage_widths) != len(self.blocks):
            raise ValueError("stage_widths and blocks need one entry per stage")
        if self.inner_widths is not None and len(self.inner_widths) != sum(self.blocks):
            raise ValueError(f"inner_widths needs one entry per block ({sum(self.blocks)})")

    @property
    def small_input(self) -> bool:
        return self.input_size <= 64

    def block_inner_widths(self) -> list[int]:
        if self.inner_widths is not None:
            return list(self.inner_widths)
        return [w for w, n in zip(self.stage_widths, self.blocks) for _ in range(n)]



class BasicBlock2d(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (-shrinkage) + shortcut, ReLU; ``inner`` filters in the middle."""

    def __init__(self, cin: int, inner: int, cout: int, stride: int, shrinkage: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, inner, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shrink = make_shrinkage(shrinkage, cout, spatial_dims=2)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.shrink(self.bn2(self.conv2(out)))
        return torch.relu(out + self.shortcut(x))


class ResNet2d(nn.Module):
    """Input (N, in_channels, S, S) with S the config's input size; output logits (N, num_classes)."""

    def __init__(self, config: ImageModelConfig):
        super().__init__()
        if config.shrinkage not in SHRINKAGE_KINDS:
            raise ValueError(f"unknown shrinkage {config.shrinkage!r}; choose one of {', '.join(SHRINKAGE_KINDS)}")
        if config.input_size < 16:
            raise ValueError(f"input size {config.input_size} is too small (at least 16 px)")
        self.config = config
        w0 = config.stage_widths[0]
        if config.small_input:
            self.stem = nn.Sequential(nn.Conv2d(config.in_channels, w0, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(config.in_channels, w0, 7, stride=2, padding=3, bias=False),
                                      nn.BatchNorm2d(w0), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        inner = iter(config.block_inner_widths())
        blocks = []
        cin = w0
        for stage, (width, count) in enumerate(zip(config.stage_widths, config.blocks)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock2d(cin, next(inner), width, stride, config.shrinkage))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(cin, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, last stage width): what relational distillation compares."""
        return self.blocks(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
