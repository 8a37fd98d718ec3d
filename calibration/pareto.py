"""The Pareto front of accuracy against p99 latency, and the choice for a latency budget."""

from __future__ import annotations

from dataclasses import dataclass, field


def dominates(a: dict, b: dict) -> bool:
    """``a`` is at least as accurate and at least as fast as ``b``, and strictly better in one."""
    return (a["accuracy"] >= b["accuracy"] and a["p99_ms"] <= b["p99_ms"]
            and (a["accuracy"] > b["accuracy"] or a["p99_ms"] < b["p99_ms"]))


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point dominates, fastest first.  Each point has ``accuracy`` and ``p99_ms``."""
    front = [p for p in points if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: (p["p99_ms"], -p["accuracy"]))


@dataclass
class Choice:
    chosen: dict | None
    reason: str
    nearest: list[dict] = field(default_factory=list)
    limit_ms: float = 0.0


def choose_for_budget(points: list[dict], budget_ms: float, margin: float = 0.2, overhead_ms: float = 0.0,
                      min_accuracy: float | None = None) -> Choice:
    """The most accurate point whose p99 plus the runtime overhead fits the budget less the margin.

    Ties in accuracy go to the faster point, so the choice is always on the Pareto front.
    """
    if budget_ms <= 0:
        raise ValueError(f"budget must be positive, got {budget_ms} ms")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    limit = budget_ms * (1.0 - margin) - overhead_ms
    fits = [p for p in points if p["p99_ms"] <= limit]
    rule = (f"p99 + runtime overhead {overhead_ms:.3f} ms <= budget {budget_ms:g} ms x (1 - margin {margin:g}), "
            f"i.e. p99 <= {limit:.3f} ms")
    if min_accuracy is not None:
        fits = [p for p in fits if p["accuracy"] >= min_accuracy]
        rule += f", accuracy >= {100 * min_accuracy:.2f}%"
    if not fits:
        nearest = sorted(points, key=lambda p: p["p99_ms"])[:3]
        return Choice(None, f"nothing fits: {rule}", nearest, limit)
    best = max(fits, key=lambda p: (p["accuracy"], -p["p99_ms"]))
    others = sum(1 for p in fits if p is not best)
    return Choice(best, f"most accurate of {others + 1} candidates with {rule}", [], limit)
