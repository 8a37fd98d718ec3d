"""A training run on disk: the only thing ``evaluate`` and (later) the bundle builder read.

```
runs/NAME/
  model.pt        plain state dict (tensors only; loaded with weights_only=True)
  config.json     model config, data selection, preprocessing, training settings
  split.json      the leak-free split: every record's segments in samples and seconds
  metrics.json    training history and held-out figures
```
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge import durable
from edge.errors import RunError
from edge.host import processor_name
from edge.models import EnsembleConfig, ImageModelConfig, ModelConfig, build_model, config_from_dict
from edge.run_files import RUN_FILES, read_run_files


@dataclass
class Run:
    path: Path
    config: dict
    split: dict
    metrics: dict

    @property
    def model_config(self) -> ModelConfig | ImageModelConfig | EnsembleConfig:
        return config_from_dict(self.config["model"])

    def load_model(self) -> nn.Module:
        """The trained network in eval mode, from tensors only (no unpickling of objects).

        A model.pt cut short by a copy, or one written for another network, is a ``RunError``
        that names it, not torch's traceback.
        """
        return load_state(build_model(self.model_config), self.path / "model.pt",
                          unreadable=f"run {self.path}: model.pt cannot be read (REASON); copy the run again, or "
                                     "train it again",
                          mismatch=f"run {self.path}: model.pt does not fit the network in config.json (REASON); "
                                   "were the files of two runs mixed?").eval()


def load_state(model: nn.Module, path: Path, unreadable: str, mismatch: str) -> nn.Module:
    """Load the tensors in ``path`` into ``model`` (no unpickling of objects).

    A file cut short, one that is no state dict, or one written for another network is a
    ``RunError``: ``unreadable`` or ``mismatch`` with REASON replaced by torch's first line.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        raise RunError(unreadable.replace("REASON", _first_line(exc))) from exc
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        raise RunError(mismatch.replace("REASON", _first_line(exc))) from exc
    return model


def _first_line(exc: BaseException) -> str:
    """The first sentence of torch's message: the rest is advice for the programmer.  Where that line only
    announces a list ("Error(s) in loading state_dict for X:"), the list's first entry says more."""
    if isinstance(exc, KeyError):  # torch.load of bytes that are no checkpoint at all
        return "not a file torch.save wrote"
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    listed = _KEY_LIST.match(line)
    if listed:  # "Missing key(s) in state_dict: "a", "b", ...": how many, and the first
        names = re.findall(r'"([^"]*)"', listed["names"])
        return f'{listed["label"]}: {len(names)}, the first "{names[0]}"'
    return line.split(". ")[0]


_KEY_LIST = re.compile(r'^(?P<label>[^:"]+): (?P<names>"[^"]*"(?:, "[^"]*")+)\.?$')


def echo(quiet: bool, text: str) -> None:
    """A progress line of a command that writes a run (train, prune, distill, ensemble), unless ``--quiet``."""
    if not quiet:
        print(text, flush=True)


def _json_text(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def training_environment() -> dict:
    """What a run's weights depend on besides its code, data and seed, recorded in its config.json.

    A seeded run trains to the same weights every time on one machine, but another processor
    (torch picks its kernels by the CPU's vector instructions) or another library build rounds
    differently, and the runs drift apart; this says which machine a run's figures belong to.
    """
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "machine": platform.machine(), "processor": processor_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpus": os.cpu_count()}


def save_run(path: Path, model: nn.Module, config: dict, split: dict, metrics: dict) -> None:
    """Write the run's four files beside any run already there, then rename them over it together:
    an interrupted save leaves the earlier run as it was, not a model with another run's config."""
    path.mkdir(parents=True, exist_ok=True)
    staged = {name: path / f"{name}.tmp" for name in RUN_FILES}
    try:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, staged["model.pt"])
        for name, doc in (("config.json", config), ("split.json", split), ("metrics.json", metrics)):
            staged[name].write_text(_json_text(doc))
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        raise
    for tmp in staged.values():
        durable.sync(tmp)
    for name, tmp in staged.items():
        durable.replace(tmp, path / name)


def load_run(path: str | Path) -> Run:
    docs = read_run_files(path)
    return Run(path=Path(path), config=docs["config.json"], split=docs["split.json"], metrics=docs["metrics.json"])
