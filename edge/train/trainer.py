"""The training loop: class-balanced random windows, noise augmentation, best-on-validation.

Settings are chosen on the validation segments only; the test segments are never
seen here.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edge.data.noise import add_noise
from edge.data.preprocess import model_input
from edge.data.splits import RandomWindowSampler
from edge.errors import DataError
from edge.train.device import CPU, to_device
from edge.train.evaluate import accuracy_under_noise
from edge.train.loop import KeptWeights, Mixup, one_cycle, step
from edge.train.mixstyle import MixStyle
from edge.train.settings import TrainSettings
from edge.train.teachers import TeacherEnsemble, with_teachers


def seed_everything(seed: int, threads: int | None = None, device: torch.device | None = None) -> np.random.Generator:
    """Seed torch and return the numpy generator all data randomness comes from.

    On a GPU, kernels with no deterministic form (the backward pass of adaptive pooling) warn
    instead of stopping the training.
    """
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=device is not None and device.type == "cuda")
    if threads:
        torch.set_num_threads(threads)
    return np.random.default_rng(seed)


#: Frequencies (0 to Nyquist, evenly spaced) where ``band_jitter`` draws its random gains.
BAND_KNOTS = 8


def band_gains(batch: np.ndarray, db: float, rng: np.random.Generator, knots: int = BAND_KNOTS) -> np.ndarray:
    """Filter each window by its own random smooth gain curve: gains drawn uniformly within +/- ``db``
    dB at ``knots`` frequencies from 0 to Nyquist, linear in dB between them.

    The load changes how strongly each resonance band of the machine carries the impacts of a
    fault; this teaches a model not to rely on the bands' relative heights.
    """
    length = batch.shape[-1]
    curve = rng.uniform(-db, db, size=batch.shape[:-1] + (knots,))
    at = np.linspace(0.0, knots - 1, length // 2 + 1)
    below = np.minimum(at.astype(int), knots - 2)
    share = at - below
    gain_db = curve[..., below] * (1.0 - share) + curve[..., below + 1] * share
    spectrum = np.fft.rfft(batch, axis=-1) * 10.0 ** (gain_db / 20.0)
    return np.fft.irfft(spectrum, n=length, axis=-1).astype(np.float32)


def augment(batch: np.ndarray, settings: TrainSettings, rng: np.random.Generator) -> np.ndarray:
    """Scale windows by a random gain (``gain_jitter``), filter them by random band gains
    (``band_jitter``), then add noise at a random SNR to all but ``clean_fraction`` of them.

    The gain matters only without per-window normalisation: the vibration's level then
    reaches the model, and the level changes with the load and the sensor's mounting.
    Noise comes last: it is the sensor's, and does not pass through the machine.
    """
    if settings.gain_jitter:
        bound = np.log1p(settings.gain_jitter)
        batch = batch * np.exp(rng.uniform(-bound, bound, size=(batch.shape[0],) + (1,) * (batch.ndim - 1)))
        batch = batch.astype(np.float32, copy=False)
    if settings.band_jitter:
        batch = band_gains(batch, settings.band_jitter, rng)
    if settings.snr_train is None:
        return batch
    lo, hi = settings.snr_train
    noisy = rng.random(batch.shape[0]) >= settings.clean_fraction
    if noisy.any():
        snr = rng.uniform(lo, hi, size=int(noisy.sum()))
        batch = batch.copy()
        batch[noisy] = add_noise(batch[noisy], snr, rng, settings.noise_kind)
    return batch


def fit(model: nn.Module, sampler: RandomWindowSampler, val_x: np.ndarray, val_y: np.ndarray,
        settings: TrainSettings, rng: np.random.Generator, progress: bool = True,
        teachers: TeacherEnsemble | None = None, device: torch.device = CPU) -> dict:
    """Train ``model`` in place, leave it at its best validation epoch, return the history.

    With ``average_epochs`` N, the model is instead the average of its weights at the end of
    the last N epochs (``WeightAverage``), and validation only reports.  With ``teachers``,
    ``distill_weight`` of the loss is the distance to their softened mean output on the same
    augmented windows, the rest the usual loss on the labels.  The network trains on ``device``
    and is handed back on the CPU.
    """
    if settings.mixstyle and settings.sam:
        raise DataError("sharpness-aware minimisation takes each step's gradient twice on the same batch; "
                        "MixStyle draws new styles at every pass: set sam to 0 to train with mixstyle")
    model.to(device)
    if teachers:
        teachers.to(device)
    weight, temperature = settings.distill_weight, settings.distill_temperature
    total = settings.epochs * settings.steps_per_epoch
    optimizer, schedule = one_cycle(model, settings.lr, settings.weight_decay, total)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    history: list[dict] = []
    keeper = KeptWeights(model, settings.epochs, settings.average_epochs)
    started = time.monotonic()
    styles = MixStyle(model, settings.mixstyle) if settings.mixstyle else None
    bar = tqdm(total=total, desc="train", unit="step", disable=not progress, leave=False)
    for epoch in range(1, settings.epochs + 1):
        model.train()
        losses = []
        for _ in range(settings.steps_per_epoch):
            x, y = sampler.draw(settings.batch_size)
            raw = augment(x, settings, rng)
            x = to_device(model_input(raw, settings.normalization), device)
            target = to_device(y, device)
            mix = Mixup(len(y), settings.mixup, rng)
            x = mix.mix(x)
            soft = mix.mix(teachers.soft_targets(raw, temperature)) if teachers else None

            def batch_loss(x=x, target=target, soft=soft, mix=mix) -> torch.Tensor:
                logits = model(x)
                loss = mix.loss(loss_fn, logits, target)
                if soft is not None:
                    loss = with_teachers(loss, logits, soft, weight, temperature)
                return loss

            losses.append(step(model, optimizer, schedule, batch_loss, settings.sam))
            bar.update(1)
        val, score = validate(model, val_x, val_y, settings)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_accuracy": val,
                        "val_score": score, "elapsed_s": round(time.monotonic() - started, 1)})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val=f"{score:.4f}")
        keeper.offer(model, epoch, score)
    bar.close()
    if styles:
        styles.remove()  # before BatchNorm statistics are measured again on plain training batches
    kept = keeper.finish(model, lambda: training_batches(sampler, settings, rng))
    if kept == "average":
        val, score = validate(model, val_x, val_y, settings)
        history.append({"epoch": "average", "epochs": keeper.average.epochs, "val_accuracy": val, "val_score": score})
    else:
        score = keeper.best.score
    model.cpu()
    return {"history": history, "best_epoch": kept, "best_val_score": score,
            "train_seconds": round(time.monotonic() - started, 1)}


def validate(model: nn.Module, val_x: np.ndarray, val_y: np.ndarray, settings: TrainSettings) -> tuple[dict, float]:
    """Validation accuracy at each of ``val_snrs`` and their mean, the score that chooses."""
    val = accuracy_under_noise(model, val_x, val_y, settings.val_snrs, settings.normalization,
                               seed=settings.seed, kind=settings.noise_kind)
    return val, float(np.mean(list(val.values())))


def training_batches(sampler: RandomWindowSampler, settings: TrainSettings, rng: np.random.Generator,
                     count: int = 50) -> list[torch.Tensor]:
    """``count`` batches drawn and augmented as in training, as the network sees them (BatchNorm statistics)."""
    return [torch.from_numpy(model_input(augment(sampler.draw(settings.batch_size)[0], settings, rng),
                                         settings.normalization)) for _ in range(count)]
