"""Does re-measuring BatchNorm statistics on unlabeled recordings of the new load (AdaBN) help across loads?

A model trained on two motor loads normalises its features with statistics of those
loads.  AdaBN measures them again on recordings of the new operating condition,
without labels, and changes nothing else.  A plant could do that: record the new
machine for a while, adapt, build the bundle again.  This measures what it would gain
and what it would risk, on the leave-one-load-out runs of `robustness_cwru.py`.
No training.

Every held-out recording is cut in time at its middle.  Windows of one half are the
unlabeled recording the adaptation sees, windows of the other half are scored (no
sample is in both), and then the other way round, so that every window is scored
once.  Scored, on the same windows and the same seeded noise:

- stored: the model as trained (its statistics from the training loads);
- adapted: statistics measured on the other half under the same condition as the
  scored one (the same noise kind and SNR: the plant's noise does not change);
- adapted, training mix: statistics measured once on the other half with the training's
  noise augmentation added (the SNR mix the model was trained with), used for every
  condition;
- adapted on clean: statistics measured on the clean other half, then scored under
  noise (the plant's noise rises after the adaptation).

Nothing is chosen here: there is no setting, and each variant is reported on every
fold.  Writes benchmarks/results/robustness_adabn.json.

    python benchmarks/robustness_cwru.py --models drsn1d-cw,resnet1d      # the runs, if not there yet
    python benchmarks/robustness_adabn.py
    python benchmarks/robustness_adabn.py --model resnet1d --out benchmarks/results/robustness_adabn_resnet1d.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

from edge.cli.common import snr_list

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness_cwru import HERE, read_done, summarise  # noqa: E402
from results_file import write_results  # noqa: E402

VARIANTS = ("stored", "adapted", "adapted_training_mix", "adapted_on_clean")
AUGMENTED_PASSES = 4  # the adaptation half, each time with fresh training noise


def halves(sources: list[dict], hop: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the windows in the first half of each recording's span, and of those in its second half."""
    first, second, offset = [], [], 0
    for source in sources:
        middle = (source["stop"] - source["start"]) // 2
        starts = np.arange(source["windows"]) * hop
        first.append(offset + np.flatnonzero(starts + window <= middle))
        second.append(offset + np.flatnonzero(starts >= middle))
        offset += source["windows"]
    return np.concatenate(first), np.concatenate(second)


def adapted(model, windows: np.ndarray, normalization: str, batch_size: int = 256):
    """A copy of ``model`` whose BatchNorm statistics are measured on ``windows`` (torch's ``update_bn``)."""
    import torch

    from edge.data.preprocess import model_input

    copied = copy.deepcopy(model)
    batches = [torch.from_numpy(model_input(windows[i:i + batch_size], normalization))
               for i in range(0, windows.shape[0], batch_size)]
    torch.optim.swa_utils.update_bn(batches, copied)
    return copied.eval()


def score_run(row: dict, snrs: list, pink_snrs: list, seed: int = 1234) -> dict:
    """Accuracy of every variant on the held-out load's windows, each half adapted on the other."""
    import torch

    from edge.train.evaluate import noisy_copies, predict, snr_key
    from edge.train.runs import load_run
    from edge.train.settings import TrainSettings
    from edge.train.trainer import augment
    from edge.train.vibration import evaluation_windows, load_run_dataset

    torch.set_num_threads(1)
    run = load_run(row["run"])
    cfg, pre = run.config, run.config["preprocessing"]
    norm, hop = pre["normalization"], pre["hops"]["test"]
    x, y, sources = evaluation_windows(load_run_dataset(cfg, None, (row["test_load"],)), cfg, "test", hop,
                                        pre["window"])
    first, second = halves(sources, hop, pre["window"])
    model = run.load_model()
    training = TrainSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["training"].items()
                                if k in TrainSettings.__dataclass_fields__})
    rng = np.random.default_rng(seed)
    sides = (first, second), (second, first)  # (adaptation, scored): each half is scored once
    on_mix = [adapted(model, np.concatenate([augment(x[a], training, rng) for _ in range(AUGMENTED_PASSES)]), norm)
              for a, _ in sides]
    on_clean = [adapted(model, x[a], norm) for a, _ in sides]

    def accuracy(nets, windows) -> float:
        right = sum(int(np.sum(predict(net, windows[b], norm) == y[b])) for net, (_, b) in zip(nets, sides))
        return right / (first.size + second.size)

    out = {f"accuracy_{v}_{kind}": {} for v in VARIANTS for kind in ("gaussian", "pink")}
    for kind, levels in (("gaussian", snrs), ("pink", pink_snrs)):
        for snr, noisy in noisy_copies(x, levels, seed, kind):
            key = snr_key(snr)
            out[f"accuracy_stored_{kind}"][key] = accuracy([model, model], noisy)
            same = on_clean if snr is None else [adapted(model, noisy[a], norm) for a, _ in sides]
            out[f"accuracy_adapted_{kind}"][key] = accuracy(same, noisy)
            out[f"accuracy_adapted_training_mix_{kind}"][key] = accuracy(on_mix, noisy)
            out[f"accuracy_adapted_on_clean_{kind}"][key] = accuracy(on_clean, noisy)
    return {"model": row["model"], "seed": row["seed"], "train_loads": row["train_loads"],
            "test_load": row["test_load"], "run": row["run"], "first_half_windows": int(first.size),
            "second_half_windows": int(second.size), **out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="drsn1d-cw")
    parser.add_argument("--snr", type=snr_list, default="none,-8,-4,0", help="SNRs for white Gaussian noise")
    parser.add_argument("--pink-snr", type=snr_list, default="-4,0", help="SNRs for pink noise")
    parser.add_argument("--work", type=Path, default=Path("runs/robustness"),
                        help="the work folder of robustness_cwru.py (its runs.jsonl names the runs)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "robustness_adabn.json")
    args = parser.parse_args()

    runs = [r for r in read_done(args.work / "runs.jsonl") if r["model"] == args.model and not r.get("variant")]
    if not runs:
        parser.error(f"no {args.model} runs in {args.work / 'runs.jsonl'}; train them first with "
                     f"`python benchmarks/robustness_cwru.py --models {args.model} --work {args.work}`")
    rows = []
    for n, row in enumerate(sorted(runs, key=lambda r: (r["test_load"], r["seed"])), 1):
        started = time.monotonic()
        rows.append(score_run(row, args.snr, args.pink_snr))
        print(f"[{n}/{len(runs)}] seed {row['seed']} test load {row['test_load']} "
              f"({time.monotonic() - started:.0f} s): "
              + "  ".join(f"{v} {100 * rows[-1][f'accuracy_{v}_gaussian']['none']:.2f}" for v in VARIANTS),
              flush=True)

    summary = {v: {kind: summarise(rows, args.model, f"accuracy_{v}_{kind}") for kind in ("gaussian", "pink")}
               for v in VARIANTS}
    doc = {
        "benchmark": "robustness_adabn",
        "model": args.model,
        "protocol": {
            "runs": "the leave-one-load-out runs of robustness_cwru.py (trained on two loads, 3 folds x seeds)",
            "split_in_time": "each held-out recording's span is cut at its middle; windows wholly in one half are the "
                             "unlabeled adaptation recording for those wholly in the other, both ways round "
                             "(windows across the middle are left out)",
            "variants": {
                "stored": "BatchNorm statistics of the training loads, as trained",
                "adapted": "statistics measured on the other half under the scored condition (same noise kind, SNR)",
                "adapted_training_mix": f"statistics measured on the other half with the training's noise "
                                        f"augmentation ({AUGMENTED_PASSES} passes), one model for every condition",
                "adapted_on_clean": "statistics measured on the clean other half, scored under noise",
            },
            "labels": "the adaptation uses no labels; nothing was chosen on the scored windows",
            "class_mix": "the adaptation recording holds every class in the shares of the held-out load's records; "
                         "a plant's recording is mostly healthy",
        },
        "date": time.strftime("%Y-%m-%d"),
        "summary": summary,
        "runs": rows,
    }
    write_results(doc, args.out)
    levels = list(summary["stored"]["gaussian"])
    print("\nleave-one-load-out, each half of the held-out recordings adapted on the other "
          "(%, mean over folds x seeds)")
    print(f"{'variant':<22}" + "".join(f"{s:>8}" for s in levels) + "".join(f"{'pink ' + s:>9}"
                                                                           for s in summary["stored"]["pink"]))
    for v in VARIANTS:
        print(f"{v:<22}" + "".join(f"{100 * summary[v]['gaussian'][s]['mean']:>8.2f}" for s in levels)
              + "".join(f"{100 * summary[v]['pink'][s]['mean']:>9.2f}" for s in summary[v]["pink"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
