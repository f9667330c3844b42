"""Classification metrics of GraphSAGE predictions: accuracy, top-k, F1, confusions, calibration."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, classes: list[str], k: int = 2,
                           bins: int = 10, confused: int = 10) -> dict[str, Any]:
    """Metrics of (n, C) class probabilities against (n,) true label ids.

    Returns accuracy, top-k accuracy, micro/macro F1 (macro over the classes present in `labels` or
    predicted), the most confused (true, predicted) pairs, and calibration bins of the first
    prediction's probability (mean probability, accuracy and count per bin).
    """
    n, num_classes = probabilities.shape
    if n == 0:
        return {"nodes": 0}
    predicted = probabilities.argmax(1)
    correct = predicted == labels
    k = min(k, num_classes)
    top = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted_count = confusion.sum(1), confusion.sum(0)
    present = (support + predicted_count) > 0
    f1 = np.where(present, 2 * tp / np.maximum(support + predicted_count, 1), 0.0)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None)[:confused]
    pairs = [{"true": classes[i], "predicted": classes[j], "count": int(off[i, j])}
             for i, j in zip(*np.unravel_index(order, off.shape), strict=True) if off[i, j] > 0]
    confidence = probabilities.max(1)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    calibration = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            calibration.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(sel.sum()),
                                "mean_probability": float(confidence[sel].mean()),
                                "accuracy": float(correct[sel].mean())})
    ece = sum(c["count"] * abs(c["mean_probability"] - c["accuracy"]) for c in calibration) / n
    return {
        "nodes": int(n),
        "accuracy": float(correct.mean()),
        f"top{k}_accuracy": float((top == labels[:, None]).any(1).mean()),
        "micro_f1": float(correct.mean()),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "most_confused": pairs,
        "calibration": calibration,
        "expected_calibration_error": float(ece),
    }
