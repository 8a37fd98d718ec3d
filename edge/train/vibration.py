"""Train and evaluate vibration runs on CWRU: data selection, split, training, held-out figures.

``evaluate`` never scores a window a run was trained or validated on: a record the
run saw (recognised by the file's sha256, whatever its path) contributes only its
held-out test segment; a record it never saw (another load, another copy of CWRU)
contributes all of its windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import edge
from edge.data.cwru import CwruDataset, load_cwru
from edge.data.preprocess import input_channels
from edge.data.splits import RandomWindowSampler, Segment, SplitSpec, cut_windows, describe_split, \
    segment_bounds, split_records, windows_of
from edge.errors import DataError
from edge.models import DcaCnn, build_model, model_config
from edge.train.dca import fit_dca_cnn
from edge.train.device import describe, training_device
from edge.train.evaluate import evaluate_under_noise
from edge.train.loop import kept_description
from edge.train.runs import echo, load_run, save_run, training_environment
from edge.train.teachers import TeacherEnsemble
from edge.train.trainer import TrainSettings, fit, seed_everything


@dataclass
class WindowSettings:
    length: int = 2048
    val_hop: int | None = None    # default: length // 2
    test_hop: int | None = None   # default: length // 8

    def hops(self) -> dict[str, int]:
        val = self.val_hop or max(self.length // 2, 1)
        test = self.test_hop or max(self.length // 8, 1)
        return {"train": 1, "val": val, "test": test}


def train_cwru(data_dir: str | Path, out: str | Path, model_name: str = "drsn1d-cw",
               loads: tuple[int, ...] = (0, 1, 2), channel: str = "DE", rate_hz: int = 12000,
               windows: WindowSettings | None = None, split: SplitSpec | None = None,
               settings: TrainSettings | None = None, width: int | None = None, depth: int | None = None,
               instance_norm: int = 0, threads: int | None = None, quiet: bool = False,
               device: str = "cpu") -> dict:
    """Train one model on CWRU on ``device`` (``--device``) and write the run directory; returns its metrics.

    ``width``, ``depth`` and ``instance_norm`` shape the model (``ModelConfig``); None keeps the model's width
    and depth.
    """
    windows = windows or WindowSettings()
    split = split or SplitSpec()
    settings = settings or TrainSettings()
    out = Path(out)
    on = training_device(device)
    rng = seed_everything(settings.seed, threads, on)

    dataset = load_cwru(data_dir, loads=loads, channel=channel, rate_hz=rate_hz)
    for note in dataset.notes:
        echo(quiet, f"note: {note}")
    segments = split_records(dataset.records, windows.length, split)
    hops = windows.hops()
    split_doc = describe_split(segments, dataset.records, split, windows.length, hops)  # split.json; checks teachers
    val_x, val_y = windows_of(segments, "val", windows.length, hops["val"])
    sampler = RandomWindowSampler(segments, windows.length, rng, settings.speed_jitter)
    config = model_config(model_name, num_classes=len(dataset.classes), width=width, depth=depth,
                          instance_norm=instance_norm, in_channels=input_channels(settings.normalization))
    model = build_model(config)
    n_params = sum(p.numel() for p in model.parameters())
    echo(quiet, f"training {model_name} ({n_params:,} parameters) on {len(dataset.records)} records, "
                f"loads {','.join(map(str, dataset.loads))}, {channel} channel at {rate_hz} Hz, "
                f"window {windows.length}; {settings.epochs} epochs x {settings.steps_per_epoch} steps "
                f"x {settings.batch_size}; {torch.get_num_threads()} threads, on {describe(on)}")
    if isinstance(model, DcaCnn):
        if settings.teachers or settings.average_epochs:
            raise DataError("distillation (--teacher) and weight averaging (--average-epochs) train the residual "
                            "families, not dca-cnn")
        result = fit_dca_cnn(model, sampler, val_x, val_y, settings, rng, progress=not quiet, device=on)
    else:
        teachers = (TeacherEnsemble.from_runs(settings.teachers, list(dataset.classes), windows.length, rate_hz,
                                              channel, split_doc["segments"])
                    if settings.teachers else None)
        if teachers:
            echo(quiet, f"distilling from {len(settings.teachers)} teacher(s): {', '.join(map(str, settings.teachers))}")
            for path, files in teachers.other_records.items():
                echo(quiet, f"note: teacher {path} also trained on {len(files)} record(s) this run does not "
                            f"({', '.join(files[:4])}{', ...' if len(files) > 4 else ''}); this run's scores on "
                            "them are not held out")
        result = fit(model, sampler, val_x, val_y, settings, rng, progress=not quiet, teachers=teachers, device=on)
    kept = kept_description(result["best_epoch"], settings.average_epochs)
    echo(quiet, f"{kept} (score {result['best_val_score']:.4f}) after {result['train_seconds']:.0f} s")

    run_config = {
        "drsn_edge_version": edge.__version__,
        "task": "cwru-10class",
        "model": config.to_dict(),
        "classes": list(dataset.classes),
        "data": {
            "dataset": "cwru", "path": str(Path(data_dir)), "loads": list(dataset.loads), "channel": channel,
            "rate_hz": rate_hz, "records": [r.describe() for r in dataset.records], "notes": dataset.notes,
        },
        "preprocessing": {"window": windows.length, "hops": hops, "normalization": settings.normalization,
                          "input_layout": "N,C,L", "rate_hz": rate_hz, "channel": channel},
        "split": split.to_dict(),
        "training": settings.to_dict() | {"threads": torch.get_num_threads(), "device": describe(on)},
        "environment": training_environment(),
    }
    metrics = {
        "parameters": n_params,
        "train_seconds": result["train_seconds"],
        "best_epoch": result["best_epoch"],
        "best_val_score": result["best_val_score"],
        "val_windows": int(val_x.shape[0]),
        "history": result["history"],
    } | ({"dca": result["dca"]} if "dca" in result else {})
    save_run(out, model, run_config, split_doc, metrics)
    echo(quiet, f"wrote {out}/ (model.pt, config.json, split.json, metrics.json)")
    return metrics


def evaluation_windows(dataset: CwruDataset, run_config: dict, split_name: str, hop: int,
                        length: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Held-out segments of records the run saw, and every window of records it never saw."""
    seen = {r["sha256"] for r in run_config["data"]["records"]}
    spec = SplitSpec(**run_config["split"])
    xs, ys, sources = [], [], []
    for rec in dataset.records:
        if rec.sha256 in seen:
            start, stop = segment_bounds(rec.signal.shape[0], length, spec)[split_name]
            origin = f"held-out {split_name} segment"
        else:
            start, stop = 0, rec.signal.shape[0]
            origin = "unseen record (all windows)"
        if stop - start < length:
            raise DataError(f"{rec.path.name}: {stop - start} samples for evaluation, fewer than one window of {length}")
        seg = Segment(rec.record, rec.label_index, rec.load, split_name, start, stop, rec.signal[start:stop])
        w = cut_windows(seg.signal, length, hop)
        xs.append(w)
        ys.append(np.full(w.shape[0], rec.label_index, dtype=np.int64))
        sources.append({"file": rec.path.name, "label": rec.label, "load_hp": rec.load, "origin": origin,
                        "start": start, "stop": stop, "windows": int(w.shape[0])})
    return np.ascontiguousarray(np.concatenate(xs), dtype=np.float32), np.concatenate(ys), sources


def load_run_dataset(run_config: dict, data_dir: str | Path | None = None,
                     loads: tuple[int, ...] | None = None) -> CwruDataset:
    """The CWRU records of a run's selection (or of other ``loads``), read as the run read them."""
    pre = run_config["preprocessing"]
    data = run_config["data"]
    return load_cwru(Path(data_dir) if data_dir else Path(data["path"]),
                     loads=tuple(loads) if loads else tuple(data["loads"]), channel=pre["channel"],
                     rate_hz=pre["rate_hz"], classes=tuple(run_config["classes"]))


def run_splits(run_config: dict, hops: dict[str, int | None],
               data_dir: str | Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw windows and labels of several splits of a run's records, cut as in training, from one read.

    ``hops`` maps each split wanted to its hop (None: the run's hop for that split).
    """
    pre = run_config["preprocessing"]
    dataset = load_run_dataset(run_config, data_dir)
    seen = {r["sha256"] for r in run_config["data"]["records"]}
    changed = [r.path.name for r in dataset.records if r.sha256 not in seen]
    if changed:
        raise DataError(f"records differ from those the run was trained on: {', '.join(changed)}")
    segments = split_records(dataset.records, pre["window"], SplitSpec(**run_config["split"]))
    return {name: windows_of(segments, name, pre["window"], hop or pre["hops"].get(name, pre["window"] // 2))
            for name, hop in hops.items()}


def run_split_windows(run_config: dict, split_name: str, hop: int | None = None,
                      data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows and labels of one split of the records a run was trained on, cut as in training."""
    return run_splits(run_config, {split_name: hop}, data_dir)[split_name]


def evaluate_cwru(run_dir: str | Path, data_dir: str | Path | None = None, loads: tuple[int, ...] | None = None,
                  snrs: list | None = None, split_name: str = "test", noise_kind: str = "gaussian",
                  seed: int = 1234, hop: int | None = None, threads: int | None = None) -> dict:
    """Score a run at every SNR on data it did not train on; returns a JSON-ready dict."""
    if split_name not in ("test", "val"):
        raise DataError(f"--split must be 'test' or 'val', got {split_name!r}")
    run = load_run(run_dir)
    if threads:
        torch.set_num_threads(threads)
    cfg = run.config
    pre = cfg["preprocessing"]
    snrs = snrs if snrs is not None else [None, -4.0, 0.0, 4.0, 8.0]
    data_dir = Path(data_dir) if data_dir else Path(cfg["data"]["path"])
    loads = tuple(loads) if loads else tuple(cfg["data"]["loads"])
    started = time.monotonic()
    dataset = load_run_dataset(cfg, data_dir, loads)
    length = pre["window"]
    hop = hop or pre["hops"][split_name]
    x, y, sources = evaluation_windows(dataset, cfg, split_name, hop, length)
    model = run.load_model()
    reports = evaluate_under_noise(model, x, y, tuple(cfg["classes"]), snrs, pre["normalization"], seed, noise_kind)
    by_snr = {k: r["accuracy"] for k, r in reports.items()}
    headline = "none" if "none" in by_snr else next(iter(by_snr))
    return {
        "run": str(run.path),
        "model": cfg["model"]["name"],
        "data": str(data_dir),
        "loads": list(loads),
        "split": split_name,
        "window": length,
        "hop": hop,
        "noise": {"kind": noise_kind, "seed": seed},
        "windows": int(x.shape[0]),
        "accuracy": by_snr[headline],
        "accuracy_by_snr": by_snr,
        "macro_f1_by_snr": {k: r["macro_f1"] for k, r in reports.items()},
        "classes": cfg["classes"],
        "reports": reports,
        "sources": sources,
        "notes": dataset.notes,
        "seconds": round(time.monotonic() - started, 2),
    }


def format_evaluation(result: dict) -> str:
    """The human table: accuracy and macro-F1 per SNR, per-class recall, clean confusion matrix."""
    keys = list(result["accuracy_by_snr"])
    held = sum(s["windows"] for s in result["sources"] if s["origin"].startswith("held-out"))
    unseen = sum(s["windows"] for s in result["sources"] if s["origin"].startswith("unseen"))
    lines = [
        f"run {result['run']}  model {result['model']}  data {result['data']}  "
        f"loads {','.join(map(str, result['loads']))}",
        f"{result['windows']} windows of {result['window']} samples, hop {result['hop']}: "
        f"{held} from held-out {result['split']} segments of trained records, {unseen} from unseen records",
    ]
    lines += [f"note: {n}" for n in result["notes"]]
    lines += ["", f"{'SNR (dB)':<10}{'accuracy':>10}{'macro-F1':>10}"]
    for k in keys:
        lines.append(f"{k:<10}{100 * result['accuracy_by_snr'][k]:>9.2f}%{100 * result['macro_f1_by_snr'][k]:>10.2f}")
    lines += ["", "recall per class (%) at each SNR", f"{'class':<10}" + "".join(f"{k:>8}" for k in keys)]
    for c in result["classes"]:
        cells = []
        for k in keys:
            r = result["reports"][k]["recall"][c]
            cells.append(f"{'-' if r is None else f'{100 * r:.1f}':>8}")
        lines.append(f"{c:<10}" + "".join(cells))
    first = keys[0]
    cm = result["reports"][first]["confusion"]
    lines += ["", f"confusion matrix at SNR {first} (rows true, columns predicted)",
              " " * 10 + "".join(f"{i:>6}" for i in range(len(result["classes"])))]
    for i, (c, row) in enumerate(zip(result["classes"], cm)):
        lines.append(f"{i} {c:<8}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
