"""Structured filter pruning of the image ResNets: the pruned network is physically smaller.

Two kinds of channels are removed, as in L1-norm filter pruning (Li et al., ICLR 2017):

* **inner** channels of each residual block (conv1's filters, and conv2's matching inputs);
* **stream** channels of each stage (the residual path every block of the stage adds into):
  the filters of the stem or of the stage's shortcut convolution and of every block's
  conv2, with every consumer (the next blocks, the next stage, shrinkage sub-networks,
  the classifier) cut to match, so residual additions stay consistent.

Channels are ranked by the L1 norm of the filters that write them (summed over every
writer for a stream channel).  The result is a new :class:`ResNet2d` built from a config
with the smaller widths (so it reloads from its run like any other) with the kept
weights copied in: FLOPs, parameters and latency really fall.

ASFP (asymptotic soft filter pruning, He et al. 2019) zeroes the weakest filters after
every epoch, at a rate that rises asymptotically to the target, lets them regrow during
training, and ends with the same hard pruning.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edge.models import ImageModelConfig, ResNet2d, build_model
from edge.models.resnet2d import BasicBlock2d
from edge.models.shrinkage import SelfAdaptiveShrinkage, Shrinkage


def _l1(conv: nn.Conv2d) -> torch.Tensor:
    return conv.weight.detach().abs().sum(dim=(1, 2, 3))


def _keep(scores: torch.Tensor, rate: float) -> torch.Tensor:
    """Indices of the strongest ``1 - rate`` channels (at least one), in their original order."""
    n = scores.numel()
    keep = max(1, n - int(math.floor(rate * n + 1e-9)))
    return torch.sort(torch.topk(scores, keep).indices).values.cpu()


def _copy_conv(src: nn.Conv2d, dst: nn.Conv2d, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None) -> None:
    w = src.weight.detach()
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    dst.weight.data.copy_(w)


def _copy_bn(src: nn.BatchNorm2d | nn.BatchNorm1d, dst, idx: torch.Tensor | None) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(src, name).detach()
        getattr(dst, name).data.copy_(value if idx is None else value[idx])
    dst.num_batches_tracked.data.copy_(src.num_batches_tracked)


def _copy_shrinkage(src: nn.Module, dst: nn.Module, idx: torch.Tensor) -> None:
    """Cut a shrinkage sub-network (FC-BN-ReLU-FC on GAP|x|, and SARSN's slopes) to the kept channels;
    exact for the channels, approximate for the hidden layer (see below)."""
    if not isinstance(src, Shrinkage):
        return
    fc_src, fc_dst = src.threshold.fc, dst.threshold.fc
    # the hidden layer is as wide as the channels but its units are not tied to channels: keep the
    # units that matter most (largest weights in and out); this part is approximate, fine-tuning mends it
    hidden_scores = fc_src[0].weight.detach().abs().sum(dim=1) * fc_src[3].weight.detach().abs().sum(dim=0)
    hidden = torch.sort(torch.topk(hidden_scores, idx.numel()).indices).values
    fc_dst[0].weight.data.copy_(fc_src[0].weight.detach()[hidden][:, idx])
    fc_dst[0].bias.data.copy_(fc_src[0].bias.detach()[hidden])
    _copy_bn(fc_src[1], fc_dst[1], hidden)
    last = fc_src[3].weight.detach()[:, hidden]
    bias = fc_src[3].bias.detach()
    if src.threshold.channel_wise:
        last, bias = last[idx], bias[idx]
    fc_dst[3].weight.data.copy_(last)
    fc_dst[3].bias.data.copy_(bias)
    if isinstance(src, SelfAdaptiveShrinkage):
        dst.delta.data.copy_(src.delta.detach()[:, idx])


def _stages(model: ResNet2d) -> list[list[BasicBlock2d]]:
    out, k = [], 0
    for count in model.config.blocks:
        out.append(list(model.blocks)[k:k + count])
        k += count
    return out


def channel_scores(model: ResNet2d) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """L1 scores of every stream channel per stage, and of every inner channel per block."""
    stream = []
    for s, blocks in enumerate(_stages(model)):
        writers = [model.stem[0]] if s == 0 else [blocks[0].shortcut[0]]
        writers += [b.conv2 for b in blocks]
        stream.append(sum(_l1(c) for c in writers))
    inner = [_l1(b.conv1) for b in model.blocks]
    return stream, inner


def prune_resnet2d(model: ResNet2d, rate: float, stream_rate: float | None = None) -> ResNet2d:
    """A new, smaller network keeping the strongest ``1 - rate`` inner channels of every block and
    ``1 - stream_rate`` (default: ``rate``) stream channels of every stage."""
    if not 0 <= rate < 1:
        raise ValueError(f"pruning rate must be in [0, 1), got {rate}")
    stream_rate = rate if stream_rate is None else stream_rate
    stream_scores, inner_scores = channel_scores(model)
    keep_stream = [_keep(s, stream_rate) for s in stream_scores]
    keep_inner = [_keep(s, rate) for s in inner_scores]
    cfg = model.config
    new_cfg = ImageModelConfig(**(cfg.to_dict() | {"stage_widths": [int(k.numel()) for k in keep_stream],
                                                   "inner_widths": [int(k.numel()) for k in keep_inner]}))
    new = build_model(new_cfg)
    # stem
    _copy_conv(model.stem[0], new.stem[0], keep_stream[0], None)
    _copy_bn(model.stem[1], new.stem[1], keep_stream[0])
    # blocks
    k = 0
    prev = keep_stream[0]
    for s, blocks in enumerate(_stages(model)):
        for i, block in enumerate(blocks):
            nb = new.blocks[k]
            inner, out = keep_inner[k], keep_stream[s]
            _copy_conv(block.conv1, nb.conv1, inner, prev)
            _copy_bn(block.bn1, nb.bn1, inner)
            _copy_conv(block.conv2, nb.conv2, out, inner)
            _copy_bn(block.bn2, nb.bn2, out)
            _copy_shrinkage(block.shrink, nb.shrink, out)
            if isinstance(block.shortcut, nn.Sequential):
                _copy_conv(block.shortcut[0], nb.shortcut[0], out, prev)
                _copy_bn(block.shortcut[1], nb.shortcut[1], out)
            prev = out
            k += 1
    new.classifier.weight.data.copy_(model.classifier.weight.detach()[:, prev])
    new.classifier.bias.data.copy_(model.classifier.bias.detach())
    return new.eval()


def asfp_rate(epoch: int, epochs: int, target: float, k: float = 4.0) -> float:
    """The soft-pruning rate after ``epoch`` of ``epochs``: rises as 1 - exp(-k t) toward ``target``."""
    t = min(max(epoch / max(epochs, 1), 0.0), 1.0)
    return target * (1 - math.exp(-k * t)) / (1 - math.exp(-k))


@torch.no_grad()
def soft_prune(model: ResNet2d, rate: float) -> int:
    """Zero the weakest filters (inner and stream) in place, as a hard prune would remove them;
    returns how many filters were zeroed.  They may grow back in the next epoch."""
    if rate <= 0:
        return 0
    stream_scores, inner_scores = channel_scores(model)
    zeroed = 0
    for block, scores in zip(model.blocks, inner_scores):
        drop = np.setdiff1d(np.arange(scores.numel()), _keep(scores, rate).numpy())
        block.conv1.weight[drop] = 0
        zeroed += drop.size
    for s, blocks in enumerate(_stages(model)):
        scores = stream_scores[s]
        drop = np.setdiff1d(np.arange(scores.numel()), _keep(scores, rate).numpy())
        writers = ([model.stem[0]] if s == 0 else [blocks[0].shortcut[0]]) + [b.conv2 for b in blocks]
        for conv in writers:
            conv.weight[drop] = 0
        zeroed += drop.size
    return zeroed
