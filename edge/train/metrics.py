"""Classification figures: accuracy, macro-F1, per-class recall, confusion matrix (numpy only)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...] | list[str]) -> dict:
    """Accuracy, macro-F1 over the classes present, per-class recall and the confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, len(classes))
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    return {
        "windows": int(support.sum()),
        "accuracy": float(tp.sum() / max(support.sum(), 1)),
        "macro_f1": float(np.mean(f1[present])) if present.any() else float("nan"),
        "recall": {c: (None if np.isnan(r) else float(r)) for c, r in zip(classes, recall)},
        "support": {c: int(s) for c, s in zip(classes, support)},
        "confusion": cm.tolist(),
    }
