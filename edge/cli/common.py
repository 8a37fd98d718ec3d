"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse


def checked(kind, ok, message: str):
    """An argparse ``type`` that converts with ``kind`` and refuses values failing ``ok``."""
    def convert(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not ok(number):
            raise argparse.ArgumentTypeError(message)
        return number
    return convert


positive_int = checked(int, lambda n: n >= 1, "must be a positive integer")
thread_count = checked(int, lambda n: n >= 1, "threads must be >= 1")
probability = checked(float, lambda p: 0.0 <= p < 1.0, "a probability in [0, 1)")


def stream_rate(value: str) -> float | None:
    value = value.strip().lower()
    if value == "realtime":
        return 1.0
    if value == "max":
        return None
    try:
        factor = float(value[1:] if value.startswith("x") else value)
    except ValueError:
        raise argparse.ArgumentTypeError("use realtime, xN (N times faster) or max") from None
    if factor <= 0:
        raise argparse.ArgumentTypeError("the speed factor must be positive")
    return factor
