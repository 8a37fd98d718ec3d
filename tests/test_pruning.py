"""Structured pruning: the pruned network is physically smaller and computes what the original computed
without the removed channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.models import build_model, config_from_dict, model_config
from edge.models.complexity import mflops, parameter_count
from edge.train.pruning import _keep, _stages, asfp_rate, channel_scores, prune_resnet2d, soft_prune


def _trained_looking(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(model_config(name, width=8, depth=2, num_classes=3, input_size=32))
    model.train()
    with torch.no_grad():
        for _ in range(3):                       # BN statistics that are not the defaults
            model(torch.randn(16, 1, 32, 32))
    return model.eval()


def _silence_removed(model, rate):
    """Zero the BN scale and shift of every channel the pruner will remove: those channels are then 0."""
    stream, inner = channel_scores(model)
    with torch.no_grad():
        for block, scores in zip(model.blocks, inner):
            drop = np.setdiff1d(np.arange(scores.numel()), _keep(scores, rate).numpy())
            block.bn1.weight[drop] = 0
            block.bn1.bias[drop] = 0
        for s, blocks in enumerate(_stages(model)):
            drop = np.setdiff1d(np.arange(stream[s].numel()), _keep(stream[s], rate).numpy())
            bns = ([model.stem[1]] if s == 0 else [blocks[0].shortcut[1]]) + [b.bn2 for b in blocks]
            for bn in bns:
                bn.weight[drop] = 0
                bn.bias[drop] = 0


@pytest.mark.parametrize("name", ["resnet18", "drsn2d", "sarsn"])
def test_pruned_network_is_smaller_and_equal_on_the_kept_channels(name):
    model = _trained_looking(name)
    _silence_removed(model, 0.3)
    pruned = prune_resnet2d(model, 0.3)
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        got, want = pruned(x).numpy(), model(x).numpy()
    if name == "resnet18":
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    else:   # the threshold sub-network's hidden layer shrinks too: close, not equal (fine-tuning follows)
        assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    assert parameter_count(pruned) < 0.6 * parameter_count(model)
    assert mflops(pruned, (1, 32, 32)) < 0.6 * mflops(model, (1, 32, 32))
    rebuilt = build_model(config_from_dict(pruned.config.to_dict()))          # reloads from its config alone
    rebuilt.load_state_dict(pruned.state_dict())


def test_three_rounds_of_thirty_percent_reach_a_quarter_of_the_flops():
    model = _trained_looking("resnet18")
    base = mflops(model, (1, 32, 32))
    for _ in range(3):
        model = prune_resnet2d(model, 0.3)
    assert mflops(model, (1, 32, 32)) <= 0.25 * base


def test_asfp_rises_to_its_target_and_soft_pruning_zeroes_filters():
    rates = [asfp_rate(e, 10, 0.3) for e in range(11)]
    assert rates[0] == 0 and abs(rates[-1] - 0.3) < 1e-12 and all(a <= b for a, b in zip(rates, rates[1:]))
    model = _trained_looking("resnet18")
    zeroed = soft_prune(model, 0.3)
    assert zeroed > 0
    assert sum(int((b.conv1.weight.abs().sum(dim=(1, 2, 3)) == 0).sum()) for b in model.blocks) > 0


def test_rkd_losses_vanish_for_the_teachers_own_embedding_up_to_scale():
    from edge.train.compression import rkd_angle, rkd_distance

    torch.manual_seed(0)
    t = torch.randn(12, 16)
    assert rkd_distance(3.0 * t, t) < 1e-6 and rkd_angle(3.0 * t, t) < 1e-6       # relations, not coordinates
    assert rkd_distance(torch.randn(12, 16), t) > 1e-3 and rkd_angle(torch.randn(12, 8), t) > 1e-3
