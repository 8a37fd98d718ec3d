"""Latency measurement that survives a noisy machine: interleaved rounds, tail percentiles.

Every candidate is timed in the same rounds, one after the other, on the same real
inputs, so a burst of load from elsewhere slows all of them alike and ratios stay
meaningful.  Used by the calibration sweep and the latency benchmarks.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from edge.runtime.metrics import latency_percentiles

Runner = Callable[[np.ndarray], object]


def percentiles(seconds: list[float] | np.ndarray) -> dict:
    """p50/p99/p99.9/max in milliseconds of a list of durations in seconds."""
    if len(seconds) == 0:
        raise ValueError("no latency samples")
    return latency_percentiles(np.asarray(seconds, dtype=np.float64) * 1e3)


def time_interleaved(runners: dict[str, Runner], inputs: np.ndarray, rounds: int = 20, per_round: int = 250,
                     batch: int = 1, warmup: int = 50) -> dict[str, dict]:
    """Percentiles of each runner's call time on ``batch``-sized slices of ``inputs``.

    Each runner is warmed up with ``warmup`` calls first; then ``rounds`` rounds time
    ``per_round`` calls of every runner in turn.
    """
    if inputs.shape[0] < batch:
        raise ValueError(f"{inputs.shape[0]} inputs for batch {batch}")
    starts = np.arange(0, inputs.shape[0] - batch + 1)
    for fn in runners.values():
        for i in range(warmup):
            s = starts[i % starts.size]
            fn(inputs[s:s + batch])
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        for name, fn in runners.items():
            for i in range(per_round):
                s = starts[(r * per_round + i) % starts.size]
                x = inputs[s:s + batch]
                t = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t)
    return {name: percentiles(ts) for name, ts in times.items()}
