"""DCA-CNN: the two-branch baseline from the rotating-machinery literature.

A time-domain multi-scale CNN branch reads the raw window; a wavelet branch reads
the discrete wavelet transform of the same window (the approximation and detail
coefficients of every level, laid end to end as ``pywt.wavedec`` orders them).
Their feature maps are fused by discriminant correlation analysis (DCA, Haghighat
et al., IEEE TIFS 2016): a linear projection computed once, in closed form, on
training features, that makes each branch's features class-separable and the two
branches maximally correlated.  A deep multi-scale CNN and a linear classifier
follow.

Everything after training is plain Conv/Relu/Add/Concat, so the model exports to
ONNX and quantizes like the residual networks: the wavelet transform is a fixed
strided convolution and the DCA projection a fixed 1x1 convolution, both stored as
buffers in the state dict.

Training runs in two phases (see ``edge.train.dca``): the branches learn with
their own classifier heads, DCA is fitted on their training features, then the
fusion head learns on the fused features with the branches frozen.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge.models.resnet1d import ModelConfig

#: Daubechies-4 analysis filters (decomposition low-pass and high-pass), as in ``pywt.Wavelet("db4")``.
DB4_DEC_LO = (-0.010597401784997278, 0.032883011666982945, 0.030841381835986965, -0.18703481171888114,
              -0.02798376941698385, 0.6308807679295904, 0.7148465705525415, 0.23037781330885523)
DB4_DEC_HI = (-0.23037781330885523, 0.7148465705525415, -0.6308807679295904, -0.02798376941698385,
              0.18703481171888114, 0.030841381835986965, -0.032883011666982945, -0.010597401784997278)

WAVELET_LEVELS = 3
FEATURE_POSITIONS = 16   # both branches are pooled to this many positions before fusion


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class MultiScaleBlock(nn.Module):
    """Parallel convolutions with small, medium and large kernels, concatenated."""

    def __init__(self, cin: int, cout_each: int, kernels: tuple[int, ...], stride: int):
        super().__init__()
        self.paths = nn.ModuleList(_conv_bn_relu(cin, cout_each, k, stride) for k in kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [p(x) for p in self.paths]
        length = min(o.shape[-1] for o in outs)
        return torch.cat([o[..., :length] for o in outs], dim=1)


class WaveletTransform(nn.Module):
    """Multi-level DWT (db4, zero padding) as fixed strided convolutions; output length = input length."""

    def __init__(self, levels: int = WAVELET_LEVELS):
        super().__init__()
        self.levels = levels
        self.register_buffer("lo", torch.tensor(DB4_DEC_LO[::-1], dtype=torch.float32).view(1, 1, -1))
        self.register_buffer("hi", torch.tensor(DB4_DEC_HI[::-1], dtype=torch.float32).view(1, 1, -1))

    def _step(self, x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
        # pywt's odd-phase downsampling of the full convolution, cropped to length/2:
        # coefficient i here is pywt's coefficient i + 2 (mode="zero")
        return nn.functional.conv1d(nn.functional.pad(x, (2, 4)), taps, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        details = []
        approx = x
        for _ in range(self.levels):
            details.append(self._step(approx, self.hi))
            approx = self._step(approx, self.lo)
        return torch.cat([approx] + details[::-1], dim=-1)   # [cA_n, cD_n, ..., cD_1]


class DcaFusion(nn.Module):
    """The fitted DCA projections of both branches (1x1 convolutions), concatenated.

    Until ``set_projection`` is called the projections are zero: a model whose DCA was
    never fitted cannot pass for a trained one.
    """

    def __init__(self, channels: int, rank: int):
        super().__init__()
        self.rank = rank
        for side in ("time", "wave"):
            self.register_buffer(f"{side}_weight", torch.zeros(rank, channels, 1))
            self.register_buffer(f"{side}_bias", torch.zeros(rank))

    def set_projection(self, side: str, weight: np.ndarray, bias: np.ndarray) -> None:
        getattr(self, f"{side}_weight").copy_(torch.from_numpy(weight.astype(np.float32)).unsqueeze(-1))
        getattr(self, f"{side}_bias").copy_(torch.from_numpy(bias.astype(np.float32)))

    def forward(self, time_features: torch.Tensor, wave_features: torch.Tensor) -> torch.Tensor:
        t = nn.functional.conv1d(time_features, self.time_weight, self.time_bias)
        w = nn.functional.conv1d(wave_features, self.wave_weight, self.wave_bias)
        return torch.cat([t, w], dim=1)


class DcaCnn(nn.Module):
    """Time branch + wavelet branch -> DCA fusion -> deep multi-scale CNN -> classifier.

    ``phase`` selects what ``forward`` returns: ``"branches"`` the mean of the two
    branch heads' logits (first training phase), ``"fused"`` the classifier on the
    DCA-fused features (second phase, export and inference).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.in_channels != 1:
            raise ValueError("dca-cnn reads one accelerometer channel")
        if min(config.width, config.depth, config.num_classes - 1) < 1:
            raise ValueError(f"dca-cnn needs width, depth >= 1 and at least 2 classes: {config}")
        if config.instance_norm:
            raise ValueError("instance_norm is a setting of the residual families; dca-cnn has no residual stages")
        self.config = config
        w = config.width
        features = 4 * w
        self.time_branch = nn.Sequential(
            MultiScaleBlock(1, w, (16, 64, 128), stride=8),
            _conv_bn_relu(3 * w, 2 * w, 3, stride=2),
            _conv_bn_relu(2 * w, features, 3, stride=2),
            nn.AdaptiveAvgPool1d(FEATURE_POSITIONS),
        )
        self.wavelet = WaveletTransform()
        self.wave_branch = nn.Sequential(
            _conv_bn_relu(1, w, 32, stride=8),
            _conv_bn_relu(w, 2 * w, 3, stride=2),
            _conv_bn_relu(2 * w, features, 3, stride=2),
            nn.AdaptiveAvgPool1d(FEATURE_POSITIONS),
        )
        self.time_head = nn.Linear(features, config.num_classes)
        self.wave_head = nn.Linear(features, config.num_classes)
        rank = config.num_classes - 1
        self.fusion = DcaFusion(features, rank)
        blocks: list[nn.Module] = [nn.BatchNorm1d(2 * rank)]
        cin = 2 * rank
        for _ in range(config.depth):
            blocks.append(MultiScaleBlock(cin, w, (3, 5, 7), stride=1))
            cin = 3 * w
        self.fusion_cnn = nn.Sequential(*blocks)
        self.classifier = nn.Linear(cin, config.num_classes)
        self.phase = "fused"
        self.branches_frozen = False

    def train(self, mode: bool = True) -> "DcaCnn":
        """Like ``nn.Module.train``, but frozen branches stay in eval mode (their BN statistics
        must not move once DCA has been fitted on their features)."""
        super().train(mode)
        if self.branches_frozen:
            self.time_branch.eval()
            self.wave_branch.eval()
        return self

    def freeze_branches(self) -> None:
        self.branches_frozen = True
        for module in (self.time_branch, self.wave_branch, self.time_head, self.wave_head):
            module.requires_grad_(False)
        self.train(self.training)

    def branch_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature maps (N, 4*width, 16) of the time and the wavelet branch."""
        return self.time_branch(x), self.wave_branch(self.wavelet(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time_features, wave_features = self.branch_features(x)
        if self.phase == "branches":
            return 0.5 * (self.time_head(time_features.mean(-1)) + self.wave_head(wave_features.mean(-1)))
        fused = self.fusion_cnn(self.fusion(time_features, wave_features))
        return self.classifier(fused.mean(-1))


def dca_projection(x: np.ndarray, y: np.ndarray, other: np.ndarray, rank: int
                   ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Closed-form DCA of two feature sets ``x`` (n, p) and ``other`` (n, q) with labels ``y``.

    Returns ``(weight, bias)`` for each set such that ``features @ weight.T + bias`` is its
    DCA-transformed feature (n, rank): between-class scatter unitized, then the
    between-set covariance diagonalised (Haghighat et al. 2016, Eq. 1-14).
    """
    def between_class(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = features.mean(axis=0)
        classes = np.unique(y)
        phi = np.stack([np.sqrt((y == c).sum()) * (features[y == c].mean(axis=0) - mean) for c in classes])
        evals, evecs = np.linalg.eigh(phi @ phi.T)            # (c, c): the small eigenproblem
        order = np.argsort(evals)[::-1][:rank]
        evals, evecs = np.maximum(evals[order], 1e-12), evecs[:, order]
        return phi.T @ evecs / np.sqrt(evals), mean             # (p, rank)

    x = x.astype(np.float64)
    other = other.astype(np.float64)
    wbx, mx = between_class(x)
    wby, my = between_class(other)
    xp, yp = (x - mx) @ wbx, (other - my) @ wby
    u, s, vt = np.linalg.svd(xp.T @ yp)
    s = np.maximum(s, 1e-12)
    wx = wbx @ (u / np.sqrt(s))
    wy = wby @ (vt.T / np.sqrt(s))
    return (wx.T, -mx @ wx), (wy.T, -my @ wy)
