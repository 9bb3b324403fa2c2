"""Evaluation numbers from labels alone (numpy only, no Keras): class weights and the classification report."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..dataset import Dataset


def class_weights(dataset: Dataset, split: str = "train") -> dict[int, float]:
    """Weights n / (n_classes * n_c) from the stored class counts (0 for an empty class)."""
    counts = dataset.metadata["tables_rows"][split]["class_counts"]
    n_classes = len(dataset.classes)
    total = sum(int(counts.get(name, 0)) for name in dataset.classes)
    return {
        label: (total / (n_classes * int(counts.get(name, 0))) if counts.get(name, 0) else 0.0)
        for label, name in enumerate(dataset.classes)
    }


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (numpy only).

    A precision, recall or F1 whose denominator is 0 is reported as 0.0 (as
    scikit-learn's default). ``confusion_matrix[i][j]`` counts true class i
    predicted as class j.
    """
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length (got {y_true.shape} and {y_pred.shape})")
    n = len(classes)
    confusion = np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(n), where=both > 0)
    return {
        "n": len(y_true),
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1.mean()),
        "majority_rate": float(support.max() / max(len(y_true), 1)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": {
            "classes": list(classes),
            "rows": "true class",
            "columns": "predicted class",
            "counts": confusion.tolist(),
        },
    }
