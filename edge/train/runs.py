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
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge.errors import RunError
from edge.models import ImageModelConfig, ModelConfig, build_model, config_from_dict
from edge.run_files import RUN_FILES, read_run_files


@dataclass
class Run:
    path: Path
    config: dict
    split: dict
    metrics: dict

    @property
    def model_config(self) -> ModelConfig | ImageModelConfig:
        return config_from_dict(self.config["model"])

    def load_model(self) -> nn.Module:
        """The trained network in eval mode, from tensors only (no unpickling of objects).

        A model.pt cut short by a copy, or one written for another network, is a ``RunError``
        that names it, not torch's traceback.
        """
        model = build_model(self.model_config)
        try:
            state = torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
            raise RunError(f"run {self.path}: model.pt cannot be read ({_first_line(exc)}); copy the run again, "
                           "or train it again") from exc
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise RunError(f"run {self.path}: model.pt does not fit the network in config.json "
                           f"({_first_line(exc)}); were the files of two runs mixed?") from exc
        return model.eval()


def _first_line(exc: BaseException) -> str:
    """The first sentence of torch's message: the rest is advice for the programmer."""
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(exc).__name__


def _json_text(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


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
    for name, tmp in staged.items():
        tmp.replace(path / name)


def load_run(path: str | Path) -> Run:
    docs = read_run_files(path)
    return Run(path=Path(path), config=docs["config.json"], split=docs["split.json"], metrics=docs["metrics.json"])
