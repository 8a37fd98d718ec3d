"""Where a training runs: the CPU, or a CUDA GPU when the build host has one.

Only the network's arithmetic moves: data loading, augmentation and the run files stay
on the CPU, and a trained network is handed back on the CPU, so evaluation, export and
the bundle never see the GPU.  The figures in this project's docs were trained on the
CPU; the same recipe on a GPU draws the same batches but its arithmetic rounds
differently, so its runs are alike, not bit for bit the same.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from edge.errors import DrsnEdgeError

CPU = torch.device("cpu")


def training_device(name: str = "cpu") -> torch.device:
    """The device ``name`` means on this host; a GPU that is not there is a clear error, not a fall-back."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DrsnEdgeError(f"--device {name}: not a device; use cpu, cuda, cuda:N or auto") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DrsnEdgeError(f"--device {name}: training runs on cpu or cuda, not {device.type}")
    if not torch.cuda.is_available():
        raise DrsnEdgeError(f"--device {name}: this PyTorch ({torch.__version__}) sees no CUDA GPU "
                            f"({'a CPU-only build' if torch.version.cuda is None else 'no driver or no GPU'}); "
                            "train with --device cpu, or on a host with an NVIDIA GPU and a CUDA build of PyTorch")
    index = 0 if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise DrsnEdgeError(f"--device {name}: this host has {torch.cuda.device_count()} CUDA GPU(s), "
                            f"counted from cuda:0")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before its first call
    return torch.device("cuda", index)


def device_of(model: nn.Module) -> torch.device:
    """The device ``model``'s weights are on (the CPU for a network without any)."""
    return next(model.parameters(), torch.empty(0)).device


def to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy batch as a tensor on ``device``."""
    return torch.from_numpy(x).to(device, non_blocking=True)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """A tensor's values as a numpy array, wherever the tensor is."""
    return x.detach().cpu().numpy()


def describe(device: torch.device) -> str:
    """``cpu``, or the GPU's name, for a training's opening line and its run files."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"
