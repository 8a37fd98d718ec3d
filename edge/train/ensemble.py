"""Trained runs of one task packed as one run whose network averages theirs (``drsn-edge ensemble``).

The members must have been trained on one split (same task, classes, preprocessing and
held-out data), so that the ensemble's validation and test data are new to every member
and ``evaluate``, ``build.py`` and the demo read the new run like any other.  Nothing is
trained: the members' weights are copied as they are.  The new run records each
member's validation score beside the ensemble's, all computed here the same way, so
that whether averaging helps is read off the validation data before any bundle is built.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.data.cwru import file_sha256
from edge.errors import RunError
from edge.models import Ensemble, EnsembleConfig
from edge.models.complexity import parameter_count
from edge.run_files import split_fingerprint
from edge.train.runs import Run, echo, load_run, save_run, training_environment

#: What every member must share, and how a mismatch is named.
SHARED = {"task": "task", "classes": "classes", "preprocessing": "preprocessing (window, size or normalisation)"}


def member_runs(run_dirs: list[str | Path]) -> list[Run]:
    """The member runs, checked: at least two, each once, no ensembles, one task, one split."""
    if len(run_dirs) < 2:
        raise RunError(f"an ensemble needs at least two runs, got {len(run_dirs)}")
    seen: dict[Path, str] = {}
    for path in run_dirs:
        where = Path(path).resolve()
        if where in seen:
            raise RunError(f"{path} is given twice (also as {seen[where]}); each member counts once")
        seen[where] = str(path)
    runs = [load_run(path) for path in run_dirs]
    first = runs[0]
    for run in runs:
        if run.config["model"]["name"] == "ensemble":
            raise RunError(f"{run.path} is an ensemble already; give its member runs instead")
        for key, what in SHARED.items():
            if run.config.get(key) != first.config.get(key):
                raise RunError(f"{run.path} and {first.path} differ in {what}: the members of an ensemble must "
                               "be runs of one task with one preprocessing")
        if split_fingerprint(run.split) != split_fingerprint(first.split):
            raise RunError(f"{run.path} and {first.path} were split differently: one member's validation or test "
                           "data would be another's training data; train them all with one --split-seed")
    return runs


@torch.no_grad()
def validation_scores(run: Run, models: list[nn.Module], data: str | Path | None = None) -> list[dict]:
    """Each model's accuracy on the run's validation data (and balanced accuracy for images, the score
    image runs choose by), all computed one way."""
    pre = run.config["preprocessing"]
    if pre.get("input") == "image":
        from edge.train.images import run_images, validate_images

        x, y = run_images(run, "val", data)
        scores = [validate_images(m, x, y, pre["normalization"], len(run.config["classes"])) for m in models]
        return [{"val_accuracy": accuracy, "val_balanced_accuracy": balanced} for _, accuracy, balanced in scores]
    from edge.train.evaluate import predict
    from edge.train.vibration import run_split_windows

    x, y = run_split_windows(run.config, "val", pre["hops"]["val"], data)
    return [{"val_accuracy": float(np.mean(predict(m, x, pre["normalization"]) == y))} for m in models]


def ensemble_runs(run_dirs: list[str | Path], out: str | Path, data: str | Path | None = None,
                  threads: int | None = None, quiet: bool = False) -> dict:
    """Write a run at ``out`` whose network is the mean softmax of the runs in ``run_dirs``; its metrics.

    ``data``: the members' data folder, if it moved (to score the validation split).
    """
    if threads:
        torch.set_num_threads(threads)
    runs = member_runs(run_dirs)
    members = [run.load_model() for run in runs]
    model = Ensemble(EnsembleConfig.of([run.config["model"] for run in runs]), members).eval()
    echo(quiet, f"scoring {len(runs)} members and their average on the validation data")
    scores = validation_scores(runs[0], [*members, model], data)
    key = "val_balanced_accuracy" if "val_balanced_accuracy" in scores[0] else "val_accuracy"
    for run, score in zip(runs, scores):
        echo(quiet, f"  {run.path}: {100 * score[key]:.2f}%")
    echo(quiet, f"  ensemble: {100 * scores[-1][key]:.2f}%")
    config = json.loads(json.dumps(runs[0].config))
    config.pop("training", None)  # the members trained; the ensemble did not
    config.pop("compression", None)
    config["model"] = model.config.to_dict()
    config["environment"] = training_environment()
    config["ensemble"] = {"members": [
        {"run": str(run.path), "model_sha256": file_sha256(run.path / "model.pt"),
         "seed": run.config.get("training", {}).get("seed"), "model": run.config["model"]["name"]}
        for run in runs]}
    metrics = {"parameters": parameter_count(model), "best_val_score": scores[-1][key], "score": key,
               "members": [{"run": str(run.path), **score} for run, score in zip(runs, scores)], **scores[-1]}
    save_run(Path(out), model, config, runs[0].split, metrics)
    echo(quiet, f"wrote {out}/ ({len(runs)} members, {parameter_count(model):,} parameters); score it with "
                f"`drsn-edge evaluate --run {out}`, build it with build.py like any run")
    return metrics
