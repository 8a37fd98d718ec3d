"""Model registry: a name picks the family and defaults; width/depth pick the size.

``drsn1d-cw``   DRSN with channel-wise thresholds (RSBU-CW), the default vibration model
``drsn1d-cs``   DRSN with one channel-shared threshold per unit (RSBU-CS)
``sarsn1d``     self-adaptive shrinkage (learned pass-through slope), SARSN
``resnet1d``    the same network without shrinkage: the plain ResNet-1D baseline
``dca-cnn``     two-branch (time + wavelet) CNN fused by discriminant correlation analysis
"""

from __future__ import annotations

from torch import nn

from edge.models.dcacnn import DcaCnn
from edge.models.resnet1d import ModelConfig, ResNet1d

MODELS: dict[str, str] = {
    "drsn1d-cw": "cw",
    "drsn1d-cs": "cs",
    "sarsn1d": "sarsn",
    "resnet1d": "none",
    "dca-cnn": "none",
}


def model_config(name: str, **overrides) -> ModelConfig:
    """The config of a registered model with ``overrides`` (width, depth, num_classes, ...)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    settings = {k: v for k, v in overrides.items() if v is not None}
    return ModelConfig(name=name, shrinkage=MODELS[name], **settings)


def build_model(config: ModelConfig) -> nn.Module:
    """Instantiate the network a config describes."""
    if config.name == "dca-cnn":
        return DcaCnn(config)
    return ResNet1d(config)


__all__ = ["DcaCnn", "MODELS", "ModelConfig", "build_model", "model_config"]
