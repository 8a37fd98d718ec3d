"""The registered model names and their shrinkage kind (no torch: the CLI lists them on the gateway too)."""

from __future__ import annotations

#: Vibration models (N, 1, L) -> shrinkage in every residual unit.
MODELS: dict[str, str] = {
    "drsn1d-cw": "cw",
    "drsn1d-cs": "cs",
    "sarsn1d": "sarsn",
    "resnet1d": "none",
    "dca-cnn": "none",
}

#: Image models (N, 1, S, S) -> shrinkage in every residual block.
IMAGE_MODELS: dict[str, str] = {
    "resnet18": "none",
    "drsn2d": "cw",
    "sarsn": "sarsn",
}
