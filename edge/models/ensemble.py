"""Several trained networks of one task as one: their class probabilities averaged.

Runs of one recipe trained from different seeds err on different inputs; the mean of
their softmax outputs errs less than any one of them, at the cost of one inference per
member.  Packed as one network, the average is one ONNX graph: it exports, quantizes,
compiles and runs on the gateway like any single model, with no code there that knows
of members.

The output is the logarithm of the mean probability, so that a softmax of it (what the
gateway and ``evaluate`` take of any model's output) gives back the mean itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from edge.models.resnet1d import JsonConfig


@dataclass
class EnsembleConfig(JsonConfig):
    """The members' own configs, in order; the shared input and classes are stored for readers of the JSON."""

    name: str = "ensemble"
    members: list[dict] = field(default_factory=list)
    in_channels: int = 1
    num_classes: int = 2

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(self.members)}")
        for key in ("in_channels", "num_classes"):
            values = {member.get(key) for member in self.members}
            if values != {getattr(self, key)}:
                raise ValueError(f"the members' {key} ({', '.join(map(str, sorted(values, key=str)))}) "
                                 f"differ from the ensemble's ({getattr(self, key)})")

    @classmethod
    def of(cls, members: list[dict]) -> "EnsembleConfig":
        """The config of an ensemble of networks with these configs (their ``to_dict()``)."""
        first = members[0] if members else {}
        return cls(members=[dict(m) for m in members], in_channels=first.get("in_channels", 1),
                   num_classes=first.get("num_classes", 2))


class Ensemble(nn.Module):
    """Input as each member's; output (N, num_classes): log of the members' mean softmax."""

    def __init__(self, config: EnsembleConfig, members: list[nn.Module]):
        super().__init__()
        if len(members) != len(config.members):
            raise ValueError(f"{len(config.members)} member configs, {len(members)} networks")
        self.config = config
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probabilities = torch.stack([torch.log_softmax(member(x), dim=1) for member in self.members])
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(self.members))
