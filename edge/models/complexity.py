"""Size and cost of a network: parameters and multiply-accumulate work per input."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def mflops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Millions of floating-point operations for one input (a multiply-add counts as 2),
    counted by PyTorch's FLOP counter on convolutions and matrix products."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape)))
    model.train(was_training)
    return counter.get_total_flops() / 1e6


def image_model_cost(model: nn.Module, size: int) -> dict:
    """``{"parameters", "mflops"}`` of an image model on one grey ``size`` x ``size`` patch."""
    return {"parameters": parameter_count(model), "mflops": mflops(model, (1, size, size))}
