"""Model registry: a name picks the family and defaults; width/depth pick the size.

Vibration windows (N, 1, L):

``drsn1d-cw``   DRSN with channel-wise thresholds (RSBU-CW), the default vibration model
``drsn1d-cs``   DRSN with one channel-shared threshold per unit (RSBU-CS)
``sarsn1d``     self-adaptive shrinkage (learned pass-through slope), SARSN
``resnet1d``    the same network without shrinkage: the plain ResNet-1D baseline
``dca-cnn``     two-branch (time + wavelet) CNN fused by discriminant correlation analysis

Grey images (N, 1, S, S):

``resnet18``    ResNet-18 (small-input stem up to 64 px)
``drsn2d``      ResNet-18 with RSBU-CW soft thresholding in every block
``sarsn``       ResNet-18 with self-adaptive shrinkage (the strip-steel teacher)

Either family:

``ensemble``    trained networks of one task, their softmax outputs averaged (``drsn-edge ensemble``)
"""

from __future__ import annotations

from torch import nn

from edge.models.dcacnn import DcaCnn
from edge.models.ensemble import Ensemble, EnsembleConfig
from edge.model_names import IMAGE_MODELS, MODELS
from edge.models.resnet1d import ModelConfig, ResNet1d
from edge.models.resnet2d import ImageModelConfig, ResNet2d

def model_config(name: str, **overrides) -> ModelConfig | ImageModelConfig:
    """The config of a registered model with ``overrides`` (width, depth, num_classes, input_size, ...).

    For image models ``width`` is the first stage's width (doubled at every stage) and
    ``depth`` the blocks per stage.
    """
    settings = {k: v for k, v in overrides.items() if v is not None}
    if name in IMAGE_MODELS:
        width, depth = settings.pop("width", None), settings.pop("depth", None)
        if width:
            settings["stage_widths"] = [width * 2 ** i for i in range(4)]
        if depth:
            settings["blocks"] = [depth] * 4
        return ImageModelConfig(name=name, shrinkage=IMAGE_MODELS[name], **settings)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join([*MODELS, *IMAGE_MODELS])}")
    settings.pop("input_size", None)
    return ModelConfig(name=name, shrinkage=MODELS[name], **settings)


def config_from_dict(data: dict) -> ModelConfig | ImageModelConfig | EnsembleConfig:
    """A stored config (a run's ``config.json`` "model"), of whichever family it names."""
    if data.get("name") == "ensemble":
        return EnsembleConfig.from_dict(data)
    if data.get("name") in IMAGE_MODELS:
        return ImageModelConfig.from_dict(data)
    return ModelConfig.from_dict(data)


def build_model(config: ModelConfig | ImageModelConfig | EnsembleConfig) -> nn.Module:
    """Instantiate the network a config describes."""
    if isinstance(config, EnsembleConfig):
        return Ensemble(config, [build_model(config_from_dict(member)) for member in config.members])
    if isinstance(config, ImageModelConfig):
        return ResNet2d(config)
    if config.name == "dca-cnn":
        return DcaCnn(config)
    return ResNet1d(config)


__all__ = ["DcaCnn", "Ensemble", "EnsembleConfig", "IMAGE_MODELS", "ImageModelConfig", "MODELS", "ModelConfig",
           "ResNet2d", "build_model", "config_from_dict", "model_config"]
