"""Build side, data and training: `datasets`, `train`, `evaluate` (may import torch, lazily)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from edge.cli.common import (add_run_output, add_training_options, given_options, positive_int, probability,
                             refuse_existing_run, remember_defaults, thread_count)
from edge.errors import DataError


EPILOG_TRAIN = """\
examples:
  drsn-edge train --model drsn1d-cw --data ../shared/data/cwru --out runs/drsn
  drsn-edge train --model resnet1d --snr-train none --epochs 10 --out runs/plain
  drsn-edge train --window 1024 --loads 0 --width 8 --depth 1 --out runs/tiny
  drsn-edge train --task xray-castings --model resnet18 --out runs/castings
  drsn-edge train --task neu --model sarsn --size 64 --class-weights gmean --out runs/neu-sarsn

  # the shipped vibration model: one DRSN-CW that learns from two teachers trained on the same
  # loads and split, with and without speed jitter (distillation; 99.35 % across loads)
  drsn-edge train --out runs/teacher-plain
  drsn-edge train --speed-jitter 0.03 --out runs/teacher-speed
  drsn-edge train --teacher runs/teacher-plain --teacher runs/teacher-speed --out runs/drsn

  # the same for images: teachers and student draw one set of validation images (--split-seed)
  drsn-edge train --task xray-castings --width 16 --split-seed 0 --seed 1 --out runs/castings-s1
  drsn-edge train --task xray-castings --width 16 --split-seed 0 --seed 2 --out runs/castings-s2
  drsn-edge train --task xray-castings --width 16 --split-seed 0 --teacher runs/castings-s1 \\
      --teacher runs/castings-s2 --out runs/castings-student

The run directory holds model.pt (plain state dict), config.json, split.json and
metrics.json.  Each record is split in time: the first 70% trains, the next 15%
validates (model selection), the last 15% is kept for `drsn-edge evaluate`, with a
window-long gap between segments so no window crosses a split.  Image sets are
deduplicated by content (copies of one image never sit on two sides), the published
test split is kept where there is one, validation comes out of train; the split is
written into the run.
"""

EPILOG_EVALUATE = """\
examples:
  drsn-edge evaluate --run runs/drsn
  drsn-edge evaluate --run runs/drsn --snr -4,0,none --json
  drsn-edge evaluate --run runs/drsn --data /data/CWRU --loads 3
  drsn-edge evaluate --run runs/castings --json           # an image run: accuracy, recall, confusion
  drsn-edge evaluate --run runs/castings --data /data/line3-patches   # images it never saw

Records the run trained on (recognised by content hash) contribute only their
held-out test segment; records it never saw (another load, another copy) contribute
all their windows.  Noise is white Gaussian at each SNR, seeded, so every model is
scored on the same noisy windows.  An image run scores the test split of the folder
it trained on, or every image of another folder (class folders, or <class>_<n>
names, in the run's classes; one class is enough) that it did not train or validate
on, recognised by content.
"""


def _range_text(snr_range: tuple[float, float] | None) -> str:
    return "none" if snr_range is None else f"{snr_range[0]:g}:{snr_range[1]:g}"


def _snr_text(snr: float | None) -> str:
    return "none" if snr is None else f"{snr:g}"


def _add_train(sub: argparse._SubParsersAction) -> None:
    from edge.data.images import IMAGE_TASKS
    from edge.data.preprocess import NORMALIZATIONS
    from edge.model_names import IMAGE_MODELS, MODELS
    from edge.train.settings import IMAGE_LABEL_SMOOTHING, TrainSettings

    defaults = TrainSettings()

    p = sub.add_parser("train", help="train a vibration or image model and write a run directory",
                       description="Train a DRSN (or a baseline) on CWRU bearing data, or an image model on X-ray "
                                   "patches or NEU strip-steel images.",
                       epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cwru", choices=["cwru", *IMAGE_TASKS],
                   help="cwru (10-class bearing faults, default), xray-castings, xray-fishbones (defect or not), "
                        "neu (6 strip-steel defects)")
    p.add_argument("--model", default=None, choices=sorted([*MODELS, *IMAGE_MODELS]),
                   help="vibration: drsn1d-cw (channel-wise thresholds, default), drsn1d-cs (shared), "
                        "sarsn1d (self-adaptive slope), resnet1d (no shrinkage baseline), "
                        "dca-cnn (time + wavelet branches fused by DCA, a literature baseline); "
                        "images: resnet18 (default), drsn2d, sarsn")
    p.add_argument("--data", type=Path, default=None,
                   help="CWRU: folder of .mat files (default: $DRSN_EDGE_DATA/cwru or ../shared/data/cwru); "
                        "images: the data root, or any folder of images in class folders or named <class>_<n> "
                        "(default: $DRSN_EDGE_DATA or ../shared/data)")
    add_run_output(p, "runs/drsn")
    p.add_argument("--loads", default="0,1,2", help="motor loads in hp, comma-separated (default 0,1,2)")
    p.add_argument("--channel", default="DE", choices=["DE", "FE", "BA"], help="accelerometer (default DE)")
    p.add_argument("--rate", type=positive_int, default=12000, help="common sampling rate in Hz (default 12000)")
    p.add_argument("--window", type=positive_int, default=2048, help="window length in samples (default 2048)")
    p.add_argument("--snr-train", default=_range_text(defaults.snr_train),
                   help="noise augmentation: uniform SNR range LO:HI in dB, or 'none' "
                        f"(default {_range_text(defaults.snr_train)})")
    p.add_argument("--clean-fraction", type=float, default=defaults.clean_fraction,
                   help=f"share of each batch kept clean when augmenting (default {defaults.clean_fraction})")
    p.add_argument("--noise", default="gaussian", choices=["gaussian", "pink", "laplacian"],
                   help="noise kind for augmentation (default gaussian)")
    p.add_argument("--speed-jitter", type=float, default=defaults.speed_jitter,
                   help="stretch training windows as if the shaft turned up to this fraction faster or slower; "
                        f"the motor load changes the speed (default {defaults.speed_jitter}, 0 = off)")
    p.add_argument("--gain-jitter", type=float, default=defaults.gain_jitter,
                   help="scale each training window by a random gain up to 1 +/- this (log-uniform); useful with "
                        f"--normalization none (default {defaults.gain_jitter}, 0 = off)")
    p.add_argument("--band-jitter", type=float, default=defaults.band_jitter, metavar="DB",
                   help="filter each training window by a random smooth gain curve across frequency, within "
                        "+/- DB dB: the load changes how strongly each resonance band carries a fault; across "
                        "CWRU's loads it did not help (docs/robustness-experiments.md) "
                        f"(default {defaults.band_jitter}, 0 = off)")
    p.add_argument("--normalization", choices=NORMALIZATIONS, default=None,
                   help="vibration: zscore (zero mean, unit std per window, the default), spectrum (the window's "
                        "amplitude spectrum, half as many bins as samples, z-scored), envelope (the window's "
                        "envelope, its demodulated impacts in physical units), raw+envelope (two input channels: "
                        "the window as with none, and its envelope) or none (physical units "
                        "from the sensor's scale, so the vibration's level reaches the model); images: "
                        "zscore-image (per image; the default but for xray-castings), center-image (mean "
                        "removed, contrast kept), highpass-image (smooth background removed, then z-scored; the "
                        "xray-castings default) or none (grey levels 0-1)")
    p.add_argument("--mixup", type=float, default=defaults.mixup,
                   help="mix pairs of training windows or images and their labels with a weight drawn from "
                        f"Beta(a, a) per batch; a = 0.2 is usual (default {defaults.mixup}, 0 = off)")
    p.add_argument("--mixstyle", type=float, default=defaults.mixstyle, metavar="P",
                   help="vibration: in this share of training batches, the early layers' per-channel mean and "
                        "spread of each window are mixed with another window's (MixStyle), so the model sees the "
                        f"machine's ringing between the styles it was given; across CWRU's loads it cost 9-17 "
                        "points (docs/robustness-experiments.md) "
                        f"(default {defaults.mixstyle}, 0 = off; residual models only)")
    p.add_argument("--sam", type=float, default=None, metavar="RHO",
                   help="sharpness-aware minimisation: each step takes its gradient at the worst weights within "
                        "RHO of the current ones, which favours minima that stay low around them; twice the "
                        "training time, nothing on the gateway. Across CWRU's loads, chosen among 0.05, 0.1, 0.2 "
                        "and 0.5 on the training loads, it lifted held-out 0 hp from 92.6 to 96.5 %% and the "
                        "clean mean from 97.1 to 98.7 %%; on the castings it was not chosen "
                        "(docs/robustness-experiments.md) "
                        f"(default {defaults.sam} for vibration, 0 = off with --mixstyle and for images)")
    p.add_argument("--average-epochs", type=int, default=defaults.average_epochs, metavar="N",
                   help="keep the average of the weights at the end of the last N epochs (stochastic weight "
                        "averaging, BatchNorm statistics measured again) instead of the best validation epoch "
                        f"(default {defaults.average_epochs}, 0 = off)")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="share of each training target spread evenly over the other classes, so the model "
                        "is less sure of what it saw only in training (default 0 vibration, "
                        f"{IMAGE_LABEL_SMOOTHING} images)")
    p.add_argument("--teacher", action="append", default=[], metavar="RUN",
                   help="also learn the mean softened output of this trained run (repeat for an ensemble). "
                        "Vibration: e.g. a zscore and a physical-units run trained on the same loads, each "
                        "teacher sees the same augmented windows through its own normalisation. Images: runs "
                        "of the same task, size and normalisation whose training images include none of the "
                        "student's validation or test images (train them all with one --split-seed)")
    p.add_argument("--distill-weight", type=float, default=defaults.distill_weight,
                   help=f"share of the loss on the teachers' outputs, the rest on the labels "
                        f"(default {defaults.distill_weight})")
    p.add_argument("--distill-temperature", type=float, default=defaults.distill_temperature,
                   help=f"softmax temperature for distillation (default {defaults.distill_temperature})")
    p.add_argument("--val-snr", default=",".join(_snr_text(v) for v in defaults.val_snrs),
                   help="the epoch kept is the best mean validation accuracy over these SNRs "
                        f"(default {','.join(_snr_text(v) for v in defaults.val_snrs)}; clean only without noise "
                        "augmentation)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs (default 30; 90 for the X-ray castings, chosen on their validation images)")
    p.add_argument("--steps", type=positive_int, default=100, help="batches per epoch (default 100)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="windows per batch (default 64)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate, one-cycle schedule (default 3e-3 vibration, 2e-3 images)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"AdamW weight decay (default {defaults.weight_decay:g} vibration, 5e-4 images, 0.05 "
                        "xray-castings)")
    p.add_argument("--width", type=positive_int, default=None,
                   help="channels of the first stage (default 16 vibration, 64 images)")
    p.add_argument("--depth", type=positive_int, default=None,
                   help="residual units per stage (default 2)")
    p.add_argument("--instance-norm", type=int, default=0, metavar="STAGES",
                   help="vibration residual models: in the stem and the first STAGES stages, normalise half the "
                        "channels of each unit's first normalisation per window (IBN-a), so a new load's feature "
                        "statistics are measured on the window itself, e.g. 2 (default 0: BatchNorm only; "
                        "docs/robustness-experiments.md)")
    p.add_argument("--size", type=positive_int, default=None,
                   help="images: input size in px, e.g. 32, 64, 100, 200 (default 32 castings, 64 otherwise)")
    p.add_argument("--class-weights", default=None, choices=["none", "balanced", "gmean"],
                   help="images: loss weights per class (balanced: inverse frequency; gmean: from validation "
                        "recall, for imbalanced sets; default none)")
    p.add_argument("--rotations", action="store_true",
                   help="images: also turn training images by quarter turns (for flaws with no orientation)")
    p.add_argument("--zoom-jitter", type=float, default=0.0, metavar="F",
                   help="images: magnify each training image about its centre by up to 1 +/- F, as another "
                        "X-ray set-up's geometry would, e.g. 0.2 (default 0: off)")
    p.add_argument("--blur-jitter", type=float, default=0.0, metavar="PX",
                   help="images: blur each training image by a Gaussian of sigma up to PX pixels, as a less "
                        "sharp detector or focal spot would, e.g. 1 (default 0: off)")
    p.add_argument("--gamma-jitter", type=float, default=0.0, metavar="F",
                   help="images: raise each training image's grey levels to a power between exp(-F) and "
                        "exp(F), as another detector response or tube voltage would, e.g. 0.3 (default 0: off). "
                        "On the castings none of the three jitters was chosen on validation "
                        "(docs/image-experiments.md); try them when your line differs from the training line "
                        "in that way")
    p.add_argument("--simulated-voids", type=probability, default=0.0, metavar="SHARE",
                   help="X-ray flaw tasks: give this share of the flawless training images a simulated void "
                        "(a blow hole: an ellipsoid brightening the image, as by Beer-Lambert) and train them "
                        "as flaws, e.g. 0.25 (default 0: off)")
    p.add_argument("--split-seed", type=int, default=None, metavar="K",
                   help="images: seed of the draw of validation images from the training series (default: "
                        "--seed); runs that are to teach one another share it, so that none learns another's "
                        "validation images")
    p.add_argument("--init-state", type=Path, default=None,
                   help="images: a state dict (.pt, tensors only) to start from instead of random weights")
    add_training_options(p)
    p.set_defaults(func=_cmd_train)
    remember_defaults(p, VIBRATION_OPTIONS + IMAGE_OPTIONS)


#: Options only one kind of task reads (argparse names).  Given for the other kind, they are
#: refused rather than silently ignored: a user who asks for quarter turns on a vibration run,
#: or for noise augmentation on images, would otherwise believe the run had them.
VIBRATION_OPTIONS = ("loads", "channel", "rate", "window", "snr_train", "clean_fraction", "noise", "speed_jitter",
                     "gain_jitter", "band_jitter", "mixstyle", "val_snr", "steps", "instance_norm")
IMAGE_OPTIONS = ("size", "class_weights", "rotations", "zoom_jitter", "blur_jitter", "gamma_jitter",
                 "simulated_voids", "split_seed", "init_state")


def _refuse_options_of_the_other_task(args: argparse.Namespace) -> None:
    images = args.task != "cwru"
    foreign = given_options(args, VIBRATION_OPTIONS if images else IMAGE_OPTIONS)
    if not foreign:
        return
    kind, other = ("an image", "vibration") if images else ("a vibration", "image")
    raise DataError(f"{', '.join(foreign)}: {other} training only; the {args.task} task trains {kind} model and "
                    f"would ignore {'it' if len(foreign) == 1 else 'them'}")


def _default_epochs(task: str) -> int:
    """The epochs a task trains for unless told: the vibration default, or what its images were measured to need."""
    if task == "cwru":
        from edge.train.settings import TrainSettings

        return TrainSettings.epochs
    from edge.train.images import ImageTrainSettings

    return ImageTrainSettings().for_task(task).epochs


def _cmd_train(args: argparse.Namespace) -> int:
    _refuse_options_of_the_other_task(args)
    refuse_existing_run(args.out, args.overwrite)
    epochs = args.epochs or _default_epochs(args.task)
    if not 0 <= args.average_epochs <= epochs:
        raise DataError(f"--average-epochs must be between 0 (off) and --epochs ({epochs}), "
                        f"got {args.average_epochs}")
    # Comparisons written so that NaN fails them too.
    if args.weight_decay is not None and not 0.0 <= args.weight_decay < math.inf:
        raise DataError(f"--weight-decay must be 0 or more, got {args.weight_decay}")
    if args.lr is not None and not 0.0 < args.lr < math.inf:
        raise DataError(f"--lr must be a positive learning rate, got {args.lr}")
    if not 0.0 <= args.distill_weight <= 1.0 or not 0.0 < args.distill_temperature < math.inf:
        raise DataError("--distill-weight must be in [0, 1] and --distill-temperature above 0")
    if not 0.0 <= args.mixup < math.inf:
        raise DataError(f"--mixup must be 0 (off) or a positive Beta parameter, got {args.mixup}")
    if args.sam is not None and not 0.0 <= args.sam < math.inf:
        raise DataError(f"--sam must be 0 (off) or a positive radius, got {args.sam}")
    if args.task != "cwru":
        return _train_images(args)
    from edge.model_names import MODELS

    model = args.model or "drsn1d-cw"
    if model not in MODELS:
        raise DataError(f"--model {model} is an image model; the cwru task takes {', '.join(MODELS)}")
    from edge.data.catalog import default_cwru_dir
    from edge.data.cwru import parse_loads
    from edge.data.noise import parse_snr_list, parse_snr_range
    from edge.data.preprocess import VIBRATION_NORMALIZATIONS, input_channels
    from edge.models import build_model, model_config
    from edge.train.settings import check_label_smoothing
    from edge.train.trainer import TrainSettings
    from edge.train.vibration import WindowSettings, train_cwru

    snr_train = parse_snr_range(args.snr_train)
    normalization = args.normalization or TrainSettings.normalization
    if normalization not in VIBRATION_NORMALIZATIONS:
        raise DataError(f"--normalization {normalization} is for images; vibration windows take "
                        f"{', '.join(VIBRATION_NORMALIZATIONS)}")
    if model == "dca-cnn" and input_channels(normalization) != 1:
        raise DataError(f"--normalization {normalization} gives {input_channels(normalization)} input channels; "
                        "dca-cnn reads one (its wavelet branch splits a single signal)")
    if not 0.0 <= args.speed_jitter < 0.5:
        raise DataError(f"--speed-jitter must be in [0, 0.5), got {args.speed_jitter}")
    if not 0.0 <= args.clean_fraction <= 1.0:
        raise DataError(f"--clean-fraction must be a share in [0, 1], got {args.clean_fraction}")
    if not 0.0 <= args.gain_jitter < 1.0:
        raise DataError(f"--gain-jitter must be in [0, 1), got {args.gain_jitter}")
    if not 0.0 <= args.mixstyle <= 1.0:
        raise DataError(f"--mixstyle must be a share of batches in [0, 1], got {args.mixstyle}")
    if args.mixstyle and args.sam:
        raise DataError("--sam takes each step's gradient twice on the same batch; --mixstyle draws new styles at "
                        "every pass, so the two would not see the same batch: use one or the other")
    sam = args.sam if args.sam is not None else 0.0 if args.mixstyle else TrainSettings.sam
    if args.mixstyle and model == "dca-cnn":
        raise DataError("--mixstyle mixes the features of a residual network's early units; dca-cnn has none")
    if args.instance_norm:  # the model's own checks, said in one line before any data is read
        try:
            build_model(model_config(model, width=args.width, depth=args.depth, instance_norm=args.instance_norm))
        except ValueError as exc:
            raise DataError(f"--instance-norm {args.instance_norm}: {exc}") from None
    if not 0.0 <= args.band_jitter <= 40.0:
        raise DataError(f"--band-jitter must be between 0 (off) and 40 dB, got {args.band_jitter}")
    settings = TrainSettings(epochs=epochs, steps_per_epoch=args.steps, batch_size=args.batch_size,
                             lr=args.lr or 3e-3, snr_train=snr_train, clean_fraction=args.clean_fraction,
                             noise_kind=args.noise, seed=args.seed, speed_jitter=args.speed_jitter,
                             normalization=normalization, gain_jitter=args.gain_jitter,
                             band_jitter=args.band_jitter, mixup=args.mixup, mixstyle=args.mixstyle, sam=sam,
                             average_epochs=args.average_epochs,
                             weight_decay=(TrainSettings.weight_decay if args.weight_decay is None
                                           else args.weight_decay),
                             label_smoothing=check_label_smoothing(args.label_smoothing),
                             teachers=[str(t) for t in args.teacher], distill_weight=args.distill_weight,
                             distill_temperature=args.distill_temperature,
                             val_snrs=parse_snr_list(args.val_snr) if snr_train else [None])
    train_cwru(args.data or default_cwru_dir(), args.out, model_name=model, loads=parse_loads(args.loads),
               channel=args.channel, rate_hz=args.rate, windows=WindowSettings(length=args.window),
               settings=settings, width=args.width, depth=args.depth, instance_norm=args.instance_norm,
               threads=args.threads, quiet=args.quiet, device=args.device)
    return 0


def _train_images(args: argparse.Namespace) -> int:
    from edge.data.catalog import default_data_root
    from edge.train.images import IMAGE_NORMALIZATIONS, ImageTrainSettings, train_images
    from edge.train.settings import IMAGE_LABEL_SMOOTHING, check_label_smoothing

    if args.normalization and args.normalization not in IMAGE_NORMALIZATIONS:
        raise DataError(f"--normalization {args.normalization} is for vibration windows; images take "
                        f"{', '.join(IMAGE_NORMALIZATIONS)}")
    if not 0.0 <= args.zoom_jitter < 1.0:
        raise DataError(f"--zoom-jitter must be in [0, 1), got {args.zoom_jitter}")
    if not 0.0 <= args.blur_jitter <= 8.0:
        raise DataError(f"--blur-jitter must be between 0 (off) and 8 px, got {args.blur_jitter}")
    if not 0.0 <= args.gamma_jitter <= 2.0:
        raise DataError(f"--gamma-jitter must be between 0 (off) and 2, got {args.gamma_jitter}")
    settings = ImageTrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr or 2e-3,
                                  class_weights=args.class_weights or "none", seed=args.seed,
                                  rotations=args.rotations, zoom=args.zoom_jitter, blur=args.blur_jitter,
                                  gamma=args.gamma_jitter, mixup=args.mixup,
                                  sam=ImageTrainSettings.sam if args.sam is None else args.sam,
                                  simulated_voids=args.simulated_voids,
                                  normalization=args.normalization, weight_decay=args.weight_decay,
                                  average_epochs=args.average_epochs, split_seed=args.split_seed,
                                  teachers=[str(t) for t in args.teacher], distill_weight=args.distill_weight,
                                  distill_temperature=args.distill_temperature,
                                  label_smoothing=check_label_smoothing(
                                      args.label_smoothing, IMAGE_LABEL_SMOOTHING))
    train_images(args.task, args.data or default_data_root(), args.out, args.model or "resnet18", size=args.size,
                 settings=settings, width=args.width, depth=args.depth, threads=args.threads, quiet=args.quiet,
                 init_state=args.init_state, device=args.device)
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a run on held-out or unseen data, clean and under noise",
                       description="Accuracy, macro-F1, per-class recall and confusion matrix of a trained run.",
                       epilog=EPILOG_EVALUATE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run directory written by `drsn-edge train`")
    p.add_argument("--data", type=Path, default=None,
                   help="folder of CWRU .mat files, or of images for an image run (default: the run's)")
    p.add_argument("--loads", default=None, help="motor loads to score, e.g. 3 (default: the run's)")
    p.add_argument("--snr", default="none,-4,0,4,8",
                   help="SNRs in dB, comma-separated; 'none' is clean (default none,-4,0,4,8)")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="segment of trained records (or split of the run's image folder) to score (default test)")
    p.add_argument("--hop", type=positive_int, default=None, help="hop between windows (default: window/8)")
    p.add_argument("--noise", default="gaussian", choices=["gaussian", "pink", "laplacian"],
                   help="noise kind (default gaussian)")
    p.add_argument("--noise-file", type=Path, default=None,
                   help="a recorded background noise (.npy, .wav or .mat) mixed in at each SNR instead")
    p.add_argument("--seed", type=int, default=1234, help="noise seed (default 1234)")
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads for torch (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=_cmd_evaluate)
    remember_defaults(p, EVALUATE_VIBRATION_OPTIONS)


#: `evaluate` options that only a vibration run reads; an image run is scored on its test images as they are.
EVALUATE_VIBRATION_OPTIONS = ("loads", "snr", "hop", "noise", "noise_file", "seed")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from edge.data.cwru import parse_loads
    from edge.data.noise import parse_snr_list
    from calibration.cli import noise_kind
    from edge.train.runs import load_run
    from edge.train.vibration import evaluate_cwru, format_evaluation

    if load_run(args.run).config["preprocessing"].get("input") == "image":
        from edge.train.images import evaluate_images, format_image_evaluation

        given = given_options(args, EVALUATE_VIBRATION_OPTIONS)
        if given:
            raise DataError(f"{', '.join(given)}: vibration runs only; {args.run} is an image run, scored on its "
                            "test images as they are")

        result = evaluate_images(args.run, args.data, args.split, args.threads)
        print(json.dumps(result) if args.json else format_image_evaluation(result))
        return 0
    result = evaluate_cwru(args.run, args.data, parse_loads(args.loads) if args.loads else None,
                           parse_snr_list(args.snr), args.split, noise_kind(args), args.seed, args.hop, args.threads)
    print(json.dumps(result) if args.json else format_evaluation(result))
    return 0


def _add_datasets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list the data sets drsn-edge can see and check them",
                       description="List CWRU records (class x load), X-ray and NEU images under a data root.")
    p.add_argument("--data", type=Path, default=None,
                   help="data root holding cwru/, xray/, neu/ (default: $DRSN_EDGE_DATA or ../shared/data)")
    p.add_argument("--check", action="store_true", help="verify every file against its sha256 list")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_datasets)


def _cmd_datasets(args: argparse.Namespace) -> int:
    from edge.data.catalog import default_data_root, format_survey, missing_data, survey

    root = args.data or default_data_root()
    if not root.is_dir():
        raise missing_data(root, given=bool(args.data))
    found = survey(root, check=args.check)
    print(json.dumps(found, indent=2) if args.json else format_survey(root, found, checked=args.check))
    return 1 if any(r["problems"] for r in found.values()) else 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_datasets(sub)
    _add_train(sub)
    _add_evaluate(sub)
