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


def multilabel_metrics(probabilities: np.ndarray, indptr: np.ndarray, label_ids: np.ndarray, classes: list[str],
                       k: int = 2, bins: int = 10, threshold: float = 0.5) -> dict[str, Any]:
    """Metrics of (n, C) independent label probabilities against each node's set of labels (CSR: indptr,
    label_ids).

    `accuracy`: the first prediction is one of the node's labels (precision@1); `top{k}_accuracy`: one of
    the first k is. The predicted set of a node is every label with probability >= `threshold`, and
    at least its first prediction: `micro_f1` / `macro_f1` (macro over the labels present in the
    truth or predicted), `exact_match` (the predicted set is the true set), `label_cardinality`
    (mean labels per node, true and predicted). Calibration bins of the first prediction's probability
    against whether it is a true label; `most_confused`: (first true label, first prediction) pairs of
    nodes whose first prediction is wrong.
    """
    n, num_classes = probabilities.shape
    if n == 0:
        return {"nodes": 0}
    truth = np.zeros((n, num_classes), dtype=bool)
    truth[np.repeat(np.arange(n), np.diff(indptr)), label_ids] = True
    first = probabilities.argmax(1)
    correct = truth[np.arange(n), first]
    k = min(k, num_classes)
    top = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    predicted = probabilities >= threshold
    predicted[np.arange(n), first] = True
    tp = (predicted & truth).sum(0).astype(np.float64)
    fp = (predicted & ~truth).sum(0).astype(np.float64)
    fn = (~predicted & truth).sum(0).astype(np.float64)
    present = (tp + fp + fn) > 0
    f1 = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    wrong = np.flatnonzero(~correct)
    primary = label_ids[indptr[:-1][wrong]]
    pairs_count: dict[tuple[int, int], int] = {}
    for t, q in zip(primary.tolist(), first[wrong].tolist(), strict=True):
        pairs_count[(t, q)] = pairs_count.get((t, q), 0) + 1
    pairs = [{"true": classes[t], "predicted": classes[q], "count": c}
             for (t, q), c in sorted(pairs_count.items(), key=lambda item: -item[1])[:10]]
    confidence = probabilities.max(1)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    calibration = [{"low": float(edges[b]), "high": float(edges[b + 1]), "count": int((which == b).sum()),
                    "mean_probability": float(confidence[which == b].mean()),
                    "accuracy": float(correct[which == b].mean())} for b in range(bins) if (which == b).any()]
    ece = sum(c["count"] * abs(c["mean_probability"] - c["accuracy"]) for c in calibration) / n
    return {
        "nodes": int(n),
        "multi_label": True,
        "accuracy": float(correct.mean()),
        f"top{k}_accuracy": float(np.take_along_axis(truth, top, 1).any(1).mean()),
        "micro_f1": float(2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "exact_match": float((predicted == truth).all(1).mean()),
        "label_cardinality": float(truth.sum(1).mean()),
        "predicted_cardinality": float(predicted.sum(1).mean()),
        "most_confused": pairs,
        "calibration": calibration,
        "expected_calibration_error": float(ece),
    }
