"""Cross-condition robustness on CWRU: leave-one-load-out, heavy noise, every model family.

For every model family, seed and fold (train on two of the motor loads 0-2, test on
the third), trains with the `drsn-edge train` defaults and scores every window of
the held-out load at each SNR, with white Gaussian noise and with pink noise, the
same seeded noise for every model.  Settings were chosen on validation segments of
the training loads only; the held-out load is touched once per figure here.

CWRU ships the normal baseline for load 0 only (97.mat).  In every fold the normal
class therefore comes from 97.mat: its first 70 % trains, the last 15 % is scored
(the loader splits it in time, with gaps), whatever the held-out load is.

Then, per family: parameters, MFLOPs per window and OpenVINO INT8 batch-1 latency
on one core (one bundle built through the normal build path from the seed-0 run
of the last fold, all families timed in the same interleaved rounds).

Results are appended per run to a JSON-lines file, so an interrupted benchmark
resumes where it stopped; the summary goes to benchmarks/results/robustness_cwru.json.

    python benchmarks/robustness_cwru.py                    # 5 families x 3 folds x 3 seeds (~2 h, 2 cores)
    python benchmarks/robustness_cwru.py --models drsn1d-cw --seeds 0 --folds 2
    python benchmarks/robustness_cwru.py --device cuda --jobs 8          # networks on a GPU, 8 runs at once
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from edge.cli.common import int_list, name_list, snr_list
from results_file import write_results

HERE = Path(__file__).resolve().parent
LOADS = (0, 1, 2)


def run_path(work: str | Path, model: str, tag: str, train_loads: tuple[int, ...], test_loads: tuple[int, ...],
             seed: int) -> Path:
    """Where a run is written: the plain protocol's runs by fold, a tagged candidate's by its training loads too
    (and by every load it is scored on: an inner run of the nested choice is scored on two)."""
    tests = "".join(map(str, test_loads))
    if not tag:
        return Path(work) / f"{model}-test{tests}-s{seed}"
    return Path(work) / f"{model}{tag}-train{''.join(map(str, train_loads))}-test{tests}-s{seed}"


#: Training settings added after runs were first logged here, with the value those runs trained with.
LOGGED_BEFORE = {"sam": 0.0}
#: Overrides that shape the model and its window rather than the training (not in TrainSettings).
MODEL_OVERRIDES = ("window", "width", "depth", "instance_norm")


def model_overrides(overrides: dict | None) -> dict:
    """The overrides that shape the model and its window (``MODEL_OVERRIDES``), not its training."""
    return {k: v for k, v in (overrides or {}).items() if k in MODEL_OVERRIDES}


def training_settings(seed: int, overrides: dict | None, epochs: int | None, steps: int | None):
    """The TrainSettings a run of this protocol trains with: the defaults, then a candidate's overrides
    (less the model's), then ``--epochs`` / ``--steps``."""
    import dataclasses

    from edge.train.settings import TrainSettings

    training = {k: v for k, v in (overrides or {}).items() if k not in MODEL_OVERRIDES}
    settings = dataclasses.replace(TrainSettings(seed=seed), **training)
    if epochs:
        settings = dataclasses.replace(settings, epochs=epochs)
    if steps:
        settings = dataclasses.replace(settings, steps_per_epoch=steps)
    return settings


def trained_as_asked(row: dict, seed: int, overrides: dict | None, epochs: int | None, steps: int | None) -> bool:
    """Whether a logged run trained with the settings a run asked for now would: a log written before a
    default changed (or by a quick ``--epochs`` look) must not stand in for the runs asked for."""
    if not row.get("settings"):
        return False
    asked = json.loads(json.dumps(asdict(training_settings(seed, overrides, epochs, steps))))
    logged = row["settings"]
    return (all(logged.get(k, LOGGED_BEFORE.get(k, v)) == v for k, v in asked.items())
            and model_overrides(row.get("overrides")) == model_overrides(overrides))


def fresh_rows(rows: list[dict], asked: Callable[[dict], dict | None], epochs: int | None,
               steps: int | None) -> list[dict]:
    """The logged rows that may stand for the runs asked now; ``asked(row)`` gives the overrides its run is asked
    with (None: not asked, kept as it is).  Says how many trained otherwise: those are trained again (their run
    folders overwritten) unless the caller has them as measured elsewhere (``--inner-from``)."""
    kept = [r for r in rows if (overrides := asked(r)) is None
            or trained_as_asked(r, r["seed"], overrides, epochs, steps)]
    if len(kept) < len(rows):
        print(f"{len(rows) - len(kept)} logged runs trained with other settings than asked now (an earlier "
              f"default, or other --epochs/--steps): not taken for them", flush=True)
    return kept


def train_and_score(data: str, work: str, model: str, seed: int, test_loads: tuple[int, ...], snrs: list,
                    pink_snrs: list, epochs: int | None, steps: int | None, train_loads: tuple[int, ...] | None = None,
                    overrides: dict | None = None, tag: str = "", device: str = "cpu") -> list[dict]:
    """One training of one family on one seed, scored on each of ``test_loads``: one row per test load (runs in a
    worker process on one CPU thread).  The training does not depend on where it is scored, so a run scored on
    two loads trains once.

    ``train_loads`` defaults to every load but the test loads; ``overrides`` replace
    training defaults (a candidate of the nested selection; ``window`` is the window
    length in samples, ``width``, ``depth`` and ``instance_norm`` the model's) and ``tag`` names them.
    The network trains on ``device``; the scoring runs on the CPU.
    """
    from edge.train.vibration import WindowSettings, evaluate_cwru, train_cwru

    train_loads = train_loads or tuple(load for load in LOADS if load not in test_loads)
    run = run_path(work, model, tag, train_loads, test_loads, seed)
    shape = model_overrides(overrides)
    windows = WindowSettings(length=int(shape.get("window", WindowSettings.length)))
    width, depth = shape.get("width"), shape.get("depth")  # the model's, not the training's
    instance_norm = int(shape.get("instance_norm", 0))
    settings = training_settings(seed, overrides, epochs, steps)
    metrics = train_cwru(data, run, model_name=model, loads=train_loads, windows=windows, settings=settings,
                         width=width, depth=depth, instance_norm=instance_norm, threads=1, quiet=True,
                         device=device)
    rows = []
    for test_load in test_loads:
        gaussian = evaluate_cwru(run, loads=(test_load,), snrs=snrs, threads=1)
        pink = (evaluate_cwru(run, loads=(test_load,), snrs=pink_snrs, noise_kind="pink", threads=1)
                if pink_snrs else None)
        rows.append({
            "model": model, "variant": tag, "overrides": overrides or {}, "seed": seed,
            "train_loads": list(train_loads), "test_load": test_load, "run": str(run), "device": device,
            "parameters": metrics["parameters"], "train_seconds": metrics["train_seconds"],
            "best_epoch": metrics["best_epoch"], "best_val_score": metrics["best_val_score"],
            "test_windows": gaussian["windows"],
            "test_windows_by_origin": {o: sum(s["windows"] for s in gaussian["sources"] if s["origin"] == o)
                                       for o in {s["origin"] for s in gaussian["sources"]}},
            "accuracy_gaussian": gaussian["accuracy_by_snr"], "accuracy_pink": pink and pink["accuracy_by_snr"],
            "settings": asdict(settings),
        })
    return rows


def read_done(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass   # a line cut short by an interruption: that run is simply done again
    return rows


def train_all(tasks: list[tuple], log: Path, jobs: int, device: str = "cpu") -> list[dict]:
    """Run ``train_and_score(*task)`` on ``device`` for every task, ``jobs`` at a time; each row is appended to
    ``log`` as soon as its run is done."""
    rows = []
    started = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = [pool.submit(train_and_score, *task, device=device) for task in tasks]
        for n, future in enumerate(as_completed(futures), 1):
            done = future.result()
            rows += done
            with log.open("a") as fh:
                fh.writelines(json.dumps(row) + "\n" for row in done)
            eta = (time.monotonic() - started) / n * (len(tasks) - n)
            for row in done:
                print(f"[{n}/{len(tasks)}] {row['model']}{row.get('variant', '')} seed {row['seed']} "
                      f"train {''.join(map(str, row['train_loads']))} test load {row['test_load']}: "
                      + "  ".join(f"{k}:{100 * v:.2f}" for k, v in row["accuracy_gaussian"].items())
                      + f"  ({row['train_seconds']:.0f} s; eta {eta / 60:.0f} min)", flush=True)
    return rows


def summarise(rows: list[dict], model: str, key: str) -> dict:
    """Per SNR: LOLO mean over folds and seeds, spread (std over seeds of the fold mean), per-fold means."""
    mine = [r for r in rows if r["model"] == model]
    out = {}
    for snr in mine[0][key]:
        by_seed: dict[int, list[float]] = {}
        by_fold: dict[int, list[float]] = {}
        for r in mine:
            by_seed.setdefault(r["seed"], []).append(r[key][snr])
            by_fold.setdefault(r["test_load"], []).append(r[key][snr])
        seed_means = [float(np.mean(v)) for v in by_seed.values()]
        out[snr] = {"mean": float(np.mean([r[key][snr] for r in mine])), "std_over_seeds": float(np.std(seed_means)),
                    "min": float(min(r[key][snr] for r in mine)),
                    "by_test_load": {str(k): float(np.mean(v)) for k, v in sorted(by_fold.items())}}
    return out


def int8_backend(run_dir: Path, bundle: Path):
    """Build an OpenVINO INT8 bundle of a run and load it on one thread, warmed up: (backend, manifest)."""
    from edge.backends import load_backend
    from edge.bundle import open_bundle
    from edge.export.build import BuildOptions, build_bundle

    print(f"   building {bundle} from {run_dir}", flush=True)
    manifest = build_bundle(run_dir, bundle, BuildOptions(target="openvino", precision="int8"), log=lambda *_: None)
    backend = load_backend(open_bundle(bundle), threads=1)
    backend.warm_up()
    return backend, manifest


def latency_inputs(config: dict) -> np.ndarray:
    """About 200 windows of a run's test segments, normalised as its bundle expects: what latency is timed on."""
    from edge.quantize.calibration import model_inputs
    from edge.train.vibration import run_split_windows

    test_x, _ = run_split_windows(config, "test")
    return model_inputs(test_x[:: max(1, test_x.shape[0] // 200)], config["preprocessing"]["normalization"])


def cost_table(rows: list[dict], models: list[str], work: Path, rounds: int, per_round: int) -> dict:
    """Parameters, MFLOPs and OpenVINO INT8 batch-1 latency (1 thread) of each family."""
    import torch

    from calibration.latency import time_interleaved
    from edge.models.complexity import mflops, parameter_count
    from edge.train.runs import load_run

    torch.set_num_threads(1)
    costs, runners, inputs = {}, {}, None
    for model in models:
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: (r["seed"], -r["test_load"]))
        run_dir = Path(mine[0]["run"])
        run = load_run(run_dir)
        net = run.load_model()
        window = run.config["preprocessing"]["window"]
        backend, manifest = int8_backend(run_dir, work / "bundles" / f"{model}-openvino-int8")
        runners[model] = backend.infer
        if inputs is None:                                  # every family timed on the same windows
            inputs = latency_inputs(run.config)
        costs[model] = {"parameters": parameter_count(net), "mflops": mflops(net, (1, window)),
                        "bundle_from": str(run_dir),
                        "int8_accuracy_on_run_test_split": manifest["accuracy"]}
    latency = time_interleaved(runners, inputs, rounds=rounds, per_round=per_round)
    for model in models:
        costs[model]["openvino_int8_batch1_1thread"] = latency[model]
    return costs


def print_table(summary: dict, snrs: list[str]) -> None:
    print("\nleave-one-load-out accuracy (%), white Gaussian noise: mean over folds x seeds (std over seeds)")
    print(f"{'model':<11}" + "".join(f"{s:>13}" for s in snrs) + f"{'params':>9}{'MFLOPs':>8}{'OV int8 p99':>12}")
    for model, doc in summary.items():
        cells = "".join(f"{100 * doc['gaussian'][s]['mean']:>7.2f} ({100 * doc['gaussian'][s]['std_over_seeds']:.2f})"
                        for s in snrs)
        cost = doc.get("cost", {})
        lat = cost.get("openvino_int8_batch1_1thread", {}).get("p99_ms")
        print(f"{model:<11}{cells}{cost.get('parameters', 0):>9,}{cost.get('mflops', 0):>8.2f}"
              f"{'' if lat is None else f'{lat:.3f} ms':>12}")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every leave-one-load-out benchmark shares: the data, training overrides, parallel runs, device."""
    from edge.cli.common import add_device_option

    parser.add_argument("--data", type=Path, default=None, help="CWRU folder (default ../shared/data/cwru)")
    parser.add_argument("--epochs", type=int, default=None, help="override the training default (for a quick look)")
    parser.add_argument("--steps", type=int, default=None, help="override the training default (for a quick look)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="runs trained at once, one CPU thread each (with a GPU, as many as its host's cores)")
    add_device_option(parser)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser)
    parser.add_argument("--models", type=name_list, default="drsn1d-cs,drsn1d-cw,sarsn1d,resnet1d,dca-cnn")
    parser.add_argument("--seeds", type=int_list, default="0,1,2")
    parser.add_argument("--folds", type=int_list, default="0,1,2", help="held-out loads, one fold each")
    parser.add_argument("--snr", type=snr_list, default="none,-8,-6,-4,-2,0,4,8", help="SNRs for white Gaussian noise")
    parser.add_argument("--pink-snr", type=snr_list, default="-8,-4,0", help="SNRs for pink noise")
    parser.add_argument("--rounds", type=int, default=20, help="latency: interleaved rounds")
    parser.add_argument("--per-round", type=int, default=250, help="latency: calls per model per round")
    parser.add_argument("--work", type=Path, default=Path("runs/robustness"), help="runs, bundles and the log")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "robustness_cwru.json")
    args = parser.parse_args()

    from edge.cli.common import checked_device
    from edge.data.catalog import default_cwru_dir
    from edge.train.evaluate import snr_key

    where = checked_device(parser, args.device)
    data = str(args.data or default_cwru_dir())
    snrs, pink_snrs = args.snr, args.pink_snr
    models = args.models
    seeds = args.seeds
    folds = args.folds
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "runs.jsonl"
    rows = [r for r in read_done(log) if r["model"] in models and r["seed"] in seeds and r["test_load"] in folds]
    rows = fresh_rows(rows, lambda r: {}, args.epochs, args.steps)
    done = {(r["model"], r["seed"], r["test_load"]) for r in rows}
    todo = [(m, s, f) for m in models for s in seeds for f in folds if (m, s, f) not in done]
    print(f"{len(done)} runs already in {log}, {len(todo)} to train ({args.jobs} at a time)", flush=True)
    rows += train_all([(data, str(args.work), m, s, (f,), snrs, pink_snrs, args.epochs, args.steps)
                       for m, s, f in todo],
                      log, args.jobs, args.device)

    print("measuring cost: OpenVINO INT8 bundles, batch-1 latency on one thread", flush=True)
    costs = cost_table(rows, models, args.work, args.rounds, args.per_round)
    summary = {m: {"gaussian": summarise(rows, m, "accuracy_gaussian"), "pink": summarise(rows, m, "accuracy_pink"),
                   "cost": costs[m], "runs": sum(r["model"] == m for r in rows)} for m in models}
    import torch

    doc = {
        "benchmark": "robustness_cwru",
        "protocol": {
            "folds": [{"train_loads": [x for x in LOADS if x != f], "test_load": f} for f in folds],
            "seeds": seeds, "snrs_gaussian": [snr_key(s) for s in snrs],
            "snrs_pink": [snr_key(s) for s in pink_snrs],
            "scored": "every window (hop window/8) of the held-out load's fault records; normal windows from the "
                      "held-out last 15 % of 97.mat (the only normal record in this copy, load 0)",
            "selection": "training settings and the epoch of every run were chosen on validation segments of the "
                         "training loads only; the held-out load was never used to choose anything",
            "spread": "std_over_seeds is the standard deviation over seeds of the mean over folds",
        },
        "training_settings": rows[0]["settings"] if rows else None,
        "machine": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__, "trained_on": where},
        "date": time.strftime("%Y-%m-%d"),
        "summary": summary,
        "runs": rows,
    }
    write_results(doc, args.out)
    print_table(summary, list(summary[models[0]]["gaussian"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
