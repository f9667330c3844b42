"""The HTML report of a GraphSAGE run (`shardgraph report RUN` on a train-sage run directory).

Metrics of the best weights, loss and accuracy curves, the distribution of the first
prediction's probability, calibration (mean probability vs accuracy), the most confused label
pairs, and 2-D t-SNE maps of node representations before and after training, coloured by label.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shardgraph.report.html import _fmt, _png, _table, tsne_2d
from shardgraph.utils.atomic import atomic_write_text

MAP_NODES = 1000


def is_sage_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "splits.npz").is_file() and (Path(run_dir) / "history.jsonl").is_file()


def _representations(model: Any, nodes: np.ndarray) -> np.ndarray:
    """(n, hidden) inputs of the last layer (the nodes' representations) under the model's weights."""
    from shardgraph.gnn.model import adjacency

    sampled, blocks = model.sampler.sample(nodes)
    with torch.no_grad():
        hidden = model.model(model.data.features.gather(sampled),
                             [adjacency(b, model.sage.aggregator) for b in reversed(blocks)], return_hidden=True)
    return np.asarray(hidden.numpy())


def _maps(model: Any, seed: int) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    from shardgraph.gnn.model import GraphSage

    features = model.data.features
    every = np.arange(features.first, features.first + features.count)
    labels = features.primary_labels(every)
    labelled = every[labels >= 0]
    rng = np.random.default_rng(seed)
    nodes = np.sort(rng.choice(labelled, size=min(MAP_NODES, len(labelled)), replace=False))
    colours = features.primary_labels(nodes)
    trained = _representations(model, nodes)
    torch.manual_seed(model.sage.seed)
    untrained = GraphSage(features.sparse_width, features.dense_width, model.sage.hidden, len(model.classes),
                          model.sage.layers, model.sage.aggregator, model.sage.dropout).eval()
    trained_model, model.model = model.model, untrained
    try:
        before = _representations(model, nodes)
    finally:
        model.model = trained_model
    out = []
    for title, points in (("before training (initial weights)", before), ("after training", trained)):
        if len(points) < 5:
            continue
        xy = tsne_2d(points, seed)
        fig, ax = plt.subplots(figsize=(5.5, 5))
        ax.scatter(xy[:, 0], xy[:, 1], c=colours % 20, cmap="tab20", s=6)
        ax.set_xticks([])
        ax.set_yticks([])
        out.append((f"Node representations {title}, t-SNE, coloured by label ({len(nodes):,} nodes)", _png(fig)))
    return out


def write_sage_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write RUN/report.html (or `out`) for a GraphSAGE run; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shardgraph.gnn.predict import load_sage

    run = Path(run_dir)
    out_path = Path(out) if out is not None else run / "report.html"
    model = load_sage(run)
    metrics = json.loads((run / "metrics.json").read_text())
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    sections = []
    rows: list[tuple[str, Any]] = [("dataset", str(model.dataset.path)), ("classes", len(model.classes)),
                                   ("epochs (best)", f"{metrics['epochs']} ({metrics['best_epoch']})"),
                                   ("training time (s)", metrics["seconds"])]
    for split in ("valid", "test"):
        if split in metrics:
            m = metrics[split]
            rows += [(f"{split} accuracy", m["accuracy"]), (f"{split} top-2 accuracy", m["top2_accuracy"]),
                     (f"{split} macro-F1", m["macro_f1"]), (f"{split} micro-F1", m["micro_f1"])]
    sections.append("<h2>GraphSAGE run</h2>" + _table(rows))
    figures: list[tuple[str, str]] = []
    if history:
        epochs = [h["epoch"] for h in history]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(epochs, [h["loss"] for h in history], label="train")
        ax.plot(epochs, [h["valid_loss"] for h in history], label="valid")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy")
        ax.legend()
        ax.grid(alpha=0.3)
        figures.append(("Loss", _png(fig)))
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(epochs, [h["train_accuracy"] for h in history], label="train")
        ax.plot(epochs, [h["valid_accuracy"] for h in history], label="valid")
        ax.axvline(metrics["best_epoch"], color="grey", ls=":", label="best weights")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.legend()
        ax.grid(alpha=0.3)
        figures.append(("Accuracy", _png(fig)))
    features = model.data.features
    every = np.arange(features.first, features.first + features.count)
    sample = np.random.default_rng(0).choice(every, size=min(20_000, len(every)), replace=False)
    first = model.probabilities(np.sort(sample)).max(1)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(first, bins=40, range=(0, 1))
    ax.set_xlabel("probability of the first prediction")
    ax.set_ylabel("nodes")
    figures.append((f"Confidence of the first prediction ({len(sample):,} nodes)", _png(fig)))
    calibration = metrics.get("test", metrics.get("valid", {})).get("calibration", [])
    if calibration:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot([0, 1], [0, 1], color="grey", ls=":")
        ax.plot([c["mean_probability"] for c in calibration], [c["accuracy"] for c in calibration], marker="o")
        ax.set_xlabel("mean probability of the first prediction")
        ax.set_ylabel("accuracy")
        figures.append(("Calibration (test)", _png(fig)))
    figures += _maps(model, model.sage.seed)
    for title, image in figures:
        sections.append(f"<h2>{html.escape(title)}</h2><img src='{image}' alt='{html.escape(title)}'>")
    confused = metrics.get("test", {}).get("most_confused", [])
    if confused:
        body = "".join(f"<tr><td>{html.escape(c['true'])}</td><td>{html.escape(c['predicted'])}</td>"
                       f"<td>{_fmt(c['count'])}</td></tr>" for c in confused)
        sections.append("<h2>Most confused labels (test)</h2><table class='grid'><tr><th>true</th>"
                        f"<th>predicted</th><th>nodes</th></tr>{body}</table>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>shardgraph report: {html.escape(run.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 900px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ padding: 0.25em 0.8em; text-align: left; border-bottom: 1px solid #ddd; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>shardgraph GraphSAGE run <code>{html.escape(str(run))}</code></h1>
{''.join(sections)}
</body></html>
"""
    atomic_write_text(out_path, page)
    return out_path
