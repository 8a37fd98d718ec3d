"""DRSN building blocks behave as the paper defines them and export cleanly to ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.export import export_onnx
from edge.models import MODELS, build_model, config_from_dict, model_config
from edge.models.resnet1d import InstanceBatchNorm1d
from edge.models.shrinkage import SelfAdaptiveShrinkage, Shrinkage, soft_threshold


def test_soft_threshold_is_sign_times_shrunk_magnitude():
    x = torch.linspace(-3, 3, 601)
    tau = torch.tensor(0.7)
    expected = torch.sign(x) * torch.clamp(x.abs() - tau, min=0)
    assert torch.allclose(soft_threshold(x, tau), expected, atol=1e-6)


@pytest.mark.parametrize("channel_wise", [True, False])
def test_thresholds_are_positive_and_below_mean_magnitude(channel_wise):
    torch.manual_seed(0)
    module = Shrinkage(8, channel_wise=channel_wise).eval()
    x = torch.randn(4, 8, 64) * torch.linspace(0.1, 3, 8)[None, :, None]
    tau = module.threshold(x)
    gap = x.abs().mean(dim=-1, keepdim=True)
    assert tau.shape == ((4, 8, 1) if channel_wise else (4, 1, 1))
    bound = gap if channel_wise else gap.mean(dim=1, keepdim=True)
    assert torch.all(tau > 0) and torch.all(tau < bound)  # alpha = sigmoid(...) lies in (0, 1)
    if not channel_wise:
        out = module(x)
        assert torch.allclose(out, soft_threshold(x, tau))


def test_sarsn_starts_as_soft_threshold_and_applies_the_learned_slope():
    torch.manual_seed(0)
    module = SelfAdaptiveShrinkage(4).eval()
    x = torch.randn(2, 4, 32)
    tau = module.threshold(x)
    assert torch.allclose(module(x), soft_threshold(x, tau))
    with torch.no_grad():
        module.delta.fill_(1.5)
    y = module(x)
    expected = torch.where(x > tau, 1.5 * x - tau, torch.where(x < -tau, 1.5 * x + tau, torch.zeros_like(x)))
    assert torch.allclose(y, expected, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("length", [400, 1024, 2048])
def test_every_model_takes_every_window_length_at_batch_one(name, length):
    model = build_model(model_config(name, width=4, depth=1)).eval()
    assert model(torch.randn(1, 1, length)).shape == (1, 10)


def test_plain_baseline_is_the_same_network_without_shrinkage():
    drsn = build_model(model_config("drsn1d-cw"))
    plain = build_model(model_config("resnet1d"))
    shrink_params = sum(p.numel() for n, p in drsn.named_parameters() if ".shrink." in n)
    assert shrink_params > 0
    assert sum(p.numel() for p in drsn.parameters()) - shrink_params == sum(p.numel() for p in plain.parameters())


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        model_config("drsn9d")


def test_instance_batch_norm_measures_half_the_channels_on_each_window_alone():
    """IBN-a: in the instance half a window's own level and offset are taken out, at inference too; the batch
    half keeps the statistics of training, and no window's output depends on the others in its batch."""
    torch.manual_seed(0)
    norm = InstanceBatchNorm1d(6).eval()
    x = torch.randn(3, 6, 128)
    out, louder = norm(x), norm(4.0 * x + 2.5)
    assert torch.allclose(out[:, :3], louder[:, :3], atol=1e-4)
    assert torch.allclose(out[:, :3].mean(dim=-1), torch.zeros(3, 3), atol=1e-5)
    assert not torch.allclose(out[:, 3:], louder[:, 3:], atol=1e-2)
    assert torch.allclose(norm(x[:1]), out[:1], atol=1e-6)


def test_instance_norm_makes_the_stem_and_the_first_stages_ibn_with_the_same_parameters():
    plain = build_model(model_config("drsn1d-cw", width=4, depth=2))
    ibn = build_model(model_config("drsn1d-cw", width=4, depth=2, instance_norm=2))
    assert isinstance(ibn.stem[1], InstanceBatchNorm1d)
    assert [isinstance(unit.bn1, InstanceBatchNorm1d) for unit in ibn.units] == [True] * 4 + [False] * 2
    assert not any(isinstance(m, InstanceBatchNorm1d) for m in plain.modules())
    assert sum(p.numel() for p in ibn.parameters()) == sum(p.numel() for p in plain.parameters())
    # A run written before the setting existed rebuilds as it was trained.
    stored = model_config("drsn1d-cw").to_dict()
    del stored["instance_norm"]
    assert config_from_dict(stored).instance_norm == 0
    with pytest.raises(ValueError, match="instance_norm must be between 0 and the 3 stages, got 4"):
        build_model(model_config("drsn1d-cw", instance_norm=4))
    with pytest.raises(ValueError, match="width must be >= 2"):
        build_model(model_config("drsn1d-cw", width=1, instance_norm=1))
    with pytest.raises(ValueError, match="dca-cnn has no residual stages"):
        build_model(model_config("dca-cnn", instance_norm=1))


@pytest.mark.parametrize("name, instance_norm", [(name, 0) for name in sorted(MODELS)] + [("drsn1d-cw", 2)])
def test_onnx_export_has_dynamic_batch_and_matches_torch(name, instance_norm, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(model_config(name, width=4, depth=1, instance_norm=instance_norm)).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", (1, 1024))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 1024)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run(["logits"], {"window": x})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_wavelet_transform_matches_pywavelets():
    pywt = pytest.importorskip("pywt")
    from edge.models.dcacnn import WaveletTransform

    x = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    approx, detail = pywt.wavedec(x, "db4", mode="zero", level=1)
    ours = WaveletTransform(levels=1)(torch.from_numpy(x).view(1, 1, -1))[0, 0].numpy()
    assert ours.shape == (512,)
    np.testing.assert_allclose(ours[:256], approx[2:258], atol=1e-5)   # [cA1 | cD1], offset by pywt's 2
    np.testing.assert_allclose(ours[256:], detail[2:258], atol=1e-5)


def test_dca_separates_classes_and_correlates_the_two_sets():
    from edge.models.dcacnn import dca_projection

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 200)
    centres_x, centres_y = rng.standard_normal((4, 12)) * 3, rng.standard_normal((4, 7)) * 3
    fx = centres_x[y] + rng.standard_normal((800, 12))
    fy = centres_y[y] + rng.standard_normal((800, 7))
    (wx, bx), (wy, by) = dca_projection(fx, y, fy, rank=3)
    assert wx.shape == (3, 12) and wy.shape == (3, 7)
    zx, zy = fx @ wx.T + bx, fy @ wy.T + by
    np.testing.assert_allclose(zx.mean(axis=0), 0, atol=1e-9)        # centred
    np.testing.assert_allclose(zx.T @ zy, np.eye(3), atol=1e-8)      # between-set covariance is the identity
    means = np.stack([zx[y == c].mean(axis=0) for c in range(4)])
    within = np.mean([zx[y == c].std(axis=0).mean() for c in range(4)])
    assert np.linalg.norm(means[:, None] - means[None], axis=-1)[~np.eye(4, dtype=bool)].min() > 3 * within


def test_unfitted_dca_cnn_fusion_is_zero_so_it_cannot_pass_for_trained():
    model = build_model(model_config("dca-cnn", width=4, depth=1)).eval()
    assert all(float(b.abs().sum()) == 0 for n, b in model.fusion.named_buffers())


def test_complexity_counts_parameters_and_flops():
    from edge.models.complexity import mflops, parameter_count

    small = build_model(model_config("resnet1d", width=4, depth=1))
    large = build_model(model_config("resnet1d", width=8, depth=1))
    assert parameter_count(small) < parameter_count(large)
    assert 0 < mflops(small, (1, 1024)) < mflops(large, (1, 1024))
    assert mflops(large, (1, 1024)) == pytest.approx(2 * mflops(large, (1, 512)), rel=0.05)  # linear in length


@pytest.mark.parametrize("name", ["resnet18", "drsn2d", "sarsn"])
@pytest.mark.parametrize("size", [32, 64, 100])
def test_image_models_take_every_input_size(name, size):
    model = build_model(model_config(name, width=4, depth=1, num_classes=6, input_size=size)).eval()
    assert model(torch.randn(2, 1, size, size)).shape == (2, 6)


def test_resnet18_is_resnet18_and_a_pruned_config_rebuilds_smaller():
    from edge.models import ImageModelConfig, config_from_dict
    from edge.models.complexity import mflops, parameter_count

    full = build_model(model_config("resnet18", num_classes=2, input_size=32))
    # 11.2 M parameters: ResNet-18 with a one-channel 3x3 stem and two classes
    assert 11_100_000 < parameter_count(full) < 11_200_000
    config = model_config("resnet18", num_classes=2, input_size=32)
    pruned = ImageModelConfig(**(config.to_dict() | {"inner_widths": [w // 2 for w in config.block_inner_widths()]}))
    small = build_model(config_from_dict(pruned.to_dict()))
    assert parameter_count(small) < 0.7 * parameter_count(full)
    assert mflops(small, (1, 32, 32)) < 0.7 * mflops(full, (1, 32, 32))
    assert small(torch.randn(1, 1, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize("name", ["resnet18", "drsn2d"])
def test_image_models_export_to_onnx(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(model_config(name, width=4, depth=1, input_size=32)).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", (1, 32, 32))
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], expected, rtol=1e-4, atol=1e-5)


def test_an_ensemble_config_rebuilds_its_members_and_refuses_members_that_do_not_fit():
    """A vibration ensemble from its stored config alone: same weights' names, the members' mean softmax out."""
    from edge.models import EnsembleConfig

    torch.manual_seed(0)
    members = [model_config("drsn1d-cw", width=4, depth=1), model_config("resnet1d", width=4, depth=1)]
    ensemble = build_model(EnsembleConfig.of([m.to_dict() for m in members])).eval()
    again = build_model(config_from_dict(ensemble.config.to_dict()))
    assert list(again.state_dict()) == list(ensemble.state_dict())
    x = torch.randn(3, 1, 1024)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), 1) for m in ensemble.members]).mean(0)
        assert torch.allclose(torch.softmax(ensemble(x), 1), mean, atol=1e-6)
    with pytest.raises(ValueError, match="at least two members"):
        EnsembleConfig.of([members[0].to_dict()])
    with pytest.raises(ValueError, match="num_classes"):
        EnsembleConfig.of([members[0].to_dict(), model_config("resnet1d", num_classes=4).to_dict()])
