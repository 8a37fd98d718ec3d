"""Training settings of vibration runs (no torch: the CLI reads its defaults on any machine)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TrainSettings:
    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    snr_train: tuple[float, float] | None = (-10.0, 8.0)  # uniform dB range, None = clean only
    clean_fraction: float = 0.2                          # share of each batch left clean
    noise_kind: str = "gaussian"
    speed_jitter: float = 0.0                            # +/- fraction of shaft speed (window stretch)
    gain_jitter: float = 0.0                             # windows scaled by up to 1 +/- this (log-uniform)
    val_snrs: list = field(default_factory=lambda: [None, -4.0, -8.0])  # model selection: mean val accuracy
    normalization: str = "zscore"
    mixup: float = 0.0                                   # Beta(a, a) mixing of window pairs and labels; 0 = off
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)
