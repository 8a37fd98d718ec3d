"""Training settings of vibration runs, and the defaults the CLI shows for image runs (no torch: the CLI
reads them on any machine)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edge.errors import DataError


#: Image models train with a little label smoothing by default (ImageTrainSettings); vibration models without.
IMAGE_LABEL_SMOOTHING = 0.05


def check_label_smoothing(value: float | None, default: float = 0.0) -> float:
    """``--label-smoothing``: None means the task's default; otherwise a share in [0, 1)."""
    if value is None:
        return default
    if not 0.0 <= value < 1.0:
        raise DataError(f"--label-smoothing must be in [0, 1), got {value}")
    return value


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
    band_jitter: float = 0.0                             # dB: windows filtered by a random smooth gain curve
    val_snrs: list = field(default_factory=lambda: [None, -4.0, -8.0])  # model selection: mean val accuracy
    normalization: str = "zscore"
    mixup: float = 0.0                                   # Beta(a, a) mixing of window pairs and labels; 0 = off
    mixstyle: float = 0.0                                # share of batches whose early features swap styles
    sam: float = 0.2                                     # sharpness-aware minimisation radius rho; 0 = off
    label_smoothing: float = 0.0                         # share of each target spread over the other classes
    average_epochs: int = 0                              # keep the weight average of the last N epochs; 0 = best epoch
    teachers: list = field(default_factory=list)         # run directories to distil from (edge.train.teachers)
    distill_weight: float = 0.5                          # share of the loss on the teachers' soft targets
    distill_temperature: float = 2.0                     # softmax temperature of teachers and student there
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)
