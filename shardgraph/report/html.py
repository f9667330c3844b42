"""`shardgraph report RUN`: one self-contained HTML page (plots inlined as PNG) about a run.

It reads what the run directory already holds: the config, metrics.jsonl (per-bucket and
per-epoch statistics, evaluations during training), saved evaluation results, and a
sample of the embeddings of the last checkpoint: their norms, and a 2-D t-SNE map of them
coloured by entity type, or by the labels of a given file (`--labels FILE`: id, label).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shardgraph.config import dump_config
from shardgraph.storage.run import TrainedRun
from shardgraph.utils.atomic import atomic_write_text

METRIC_KEYS = ("mrr", "mr", "hits@1", "hits@3", "hits@10", "auc")
MAP_POINTS = 1000  # entities drawn on a t-SNE map
MAP_COLOURS = 19  # the most frequent labels get a colour each, the rest are "other"


def _records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def tsne_2d(points: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE coordinates of (n, d) points (scikit-learn; PCA initialisation, seeded)."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(points) - 1) // 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500)
    return np.asarray(tsne.fit_transform(points))


def scatter_png(xy: np.ndarray, colours: np.ndarray, names: list[str]) -> str:
    """A scatter plot of 2-D points, colour c of a point named names[c] (legend when there are several)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.2))
    cmap = plt.get_cmap("tab20")
    for c, name in enumerate(names):
        mine = colours == c
        if mine.any():
            ax.scatter(xy[mine, 0], xy[mine, 1], s=6, color=cmap(c % 20), label=f"{name} ({int(mine.sum()):,})")
    ax.set_xticks([])
    ax.set_yticks([])
    if len(names) > 1:
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.tight_layout()
    return _png(fig)


def _sample_by_type(run: TrainedRun, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(entity type, sorted global ids): MAP_POINTS entities drawn uniformly from all types together."""
    specs = [spec for spec in run.model.entity_types.values() if spec.count]
    counts = np.array([spec.count for spec in specs], dtype=np.int64)
    if not len(counts):
        return []
    draw = np.sort(rng.choice(int(counts.sum()), size=min(MAP_POINTS, int(counts.sum())), replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    which = np.searchsorted(starts, draw, side="right") - 1
    return [(spec.name, draw[which == t] - starts[t]) for t, spec in enumerate(specs) if (which == t).any()]


def _sample_labelled(run: TrainedRun, labels: Path,
                     rng: np.random.Generator) -> list[tuple[str, np.ndarray, list[str]]]:
    """(entity type, global ids, labels) of MAP_POINTS entities drawn uniformly from those the label file
    names (reservoir sampling: memory bounded whatever the file's size). Ids of no entity type are skipped."""
    from shardgraph.data.nodes import read_label_file
    from shardgraph.embeddings.model import EntityIndex
    from shardgraph.errors import InputError

    indexes = [EntityIndex(run, spec, []) for spec in run.model.entity_types.values() if spec.count]
    keys = np.zeros(0)
    kept: list[tuple[int, int, str]] = []  # (type index, global id, label)
    lines = 0
    for names, values, _ in read_label_file(labels, "id"):
        lines += len(names)
        for t, index in enumerate(indexes):
            ids = index.find(names)
            hit = np.flatnonzero(ids >= 0)
            if not len(hit):
                continue
            text = values.take(pa.array(hit)).to_pylist()
            keys = np.concatenate([keys, rng.random(len(hit))])
            kept += [(t, int(i), str(v)) for i, v in zip(ids[hit].tolist(), text, strict=True)]
            if len(kept) > 4 * MAP_POINTS:
                best = np.argsort(keys)[:MAP_POINTS]
                keys, kept = keys[best], [kept[i] for i in best.tolist()]
    if not kept:
        raise InputError(f"none of the {lines:,} ids of the label file is an entity of the run", path=labels)
    best = np.argsort(keys)[:MAP_POINTS]
    kept = sorted(kept[i] for i in best.tolist())
    out = []
    for t, index in enumerate(indexes):
        mine = [(i, label) for u, i, label in kept if u == t]
        if mine:
            out.append((index.type, np.array([i for i, _ in mine], np.int64), [label for _, label in mine]))
    return out


def entity_maps(run: TrainedRun, labels: str | Path | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """t-SNE maps of a sample of the run's entity embeddings, coloured by entity type or by the labels of
    a file (id, label per line, TSV or CSV). Entity types of different dimensions get a map each."""
    rng = np.random.default_rng(seed)
    groups: dict[int, list[tuple[np.ndarray, list[str]]]] = {}
    if labels is None:
        for name, ids in _sample_by_type(run, rng):
            groups.setdefault(run.model.entity_types[name].dim, []).append((run.gather(name, ids).numpy(),
                                                                            [name] * len(ids)))
        what = "entity type"
    else:
        for name, ids, tags in _sample_labelled(run, Path(labels), rng):
            groups.setdefault(run.model.entity_types[name].dim, []).append((run.gather(name, ids).numpy(), tags))
        what = f"label ({Path(labels).name})"
    out = []
    for dim, parts in groups.items():
        points = np.concatenate([p for p, _ in parts])
        tags = [t for _, group in parts for t in group]
        if len(points) < 5:
            continue
        ranked = [t for t, _ in Counter(tags).most_common()]
        names = ranked[:MAP_COLOURS] + (["other"] if len(ranked) > MAP_COLOURS else [])
        code = {t: min(i, MAP_COLOURS) for i, t in enumerate(ranked)}
        colours = np.array([code[t] for t in tags])
        suffix = f", dimension {dim}" if len(groups) > 1 else ""
        out.append((f"Entity embeddings, t-SNE, coloured by {what} ({len(points):,} entities{suffix})",
                    scatter_png(tsne_2d(points, seed), colours, names)))
    return out


def _plots(run: TrainedRun, records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    epochs = [r for r in records if r.get("event") == "epoch"]
    evals = [r for r in records if r.get("event") == "eval"]
    buckets = [r for r in records if r.get("event") == "bucket"]
    if epochs:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot([r["epoch"] + 1 for r in epochs], [r["mean_loss"] for r in epochs], marker="o")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean loss per edge")
        ax.grid(alpha=0.3)
        out.append(("Training loss", _png(fig)))
    if evals:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for key in ("mrr", "hits@1", "hits@10"):
            ax.plot([r["epoch"] for r in evals], [r[key] for r in evals], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{evals[0]['split']} ({'filtered' if evals[0]['filtered'] else 'raw'})")
        ax.legend()
        ax.grid(alpha=0.3)
        out.append(("Validation metrics during training", _png(fig)))
    if buckets:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(range(len(buckets)), [r["edges_per_sec"] for r in buckets], lw=1)
        ax.set_xlabel("bucket (in training order)")
        ax.set_ylabel("edges / s")
        ax.grid(alpha=0.3)
        out.append(("Throughput per bucket", _png(fig)))
    norms = []
    rng = np.random.default_rng(0)
    for name, spec in run.model.entity_types.items():
        for partition, count in enumerate(spec.partition_counts):
            if count == 0:
                continue
            rows = np.sort(rng.choice(count, size=min(count, 20_000 // spec.partitions + 1), replace=False))
            vectors = run.embeddings(name, partition, rows=rows)
            norms.append((name, vectors.norm(dim=1).numpy()))
    if norms:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for name in dict.fromkeys(n for n, _ in norms):
            values = np.concatenate([v for n, v in norms if n == name])
            ax.hist(values, bins=60, alpha=0.6, label=name)
        ax.set_xlabel("embedding norm")
        ax.set_ylabel("entities (sample)")
        if len({n for n, _ in norms}) > 1:
            ax.legend()
        out.append(("Embedding norms", _png(fig)))
    return out


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def saved_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """Evaluation results `shardgraph eval` saved in the run directory."""
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("eval.*.json"))]


def write_report(run_dir: str | Path, out: str | Path | None = None, labels: str | Path | None = None) -> Path:
    """Write the HTML report of a run; returns its path (default RUN/report.html). `labels`: a file of
    (id, label) lines that colours the map of the embeddings (default: by entity type)."""
    run = TrainedRun(run_dir)
    run_dir = run.path
    out_path = Path(out) if out is not None else run_dir / "report.html"
    records = _records(run_dir)
    summary = run.dataset.summary()
    epochs = [r for r in records if r.get("event") == "epoch"]
    train_seconds = sum(r["seconds"] for r in epochs)
    train_edges = sum(r["edges"] for r in epochs)
    sections = []
    sections.append("<h2>Dataset</h2>" + _table([
        ("path", summary["path"]), ("entities", summary["entities"]), ("relations", summary["relations"]),
        ("train / valid / test edges", " / ".join(f"{summary['edges'][s]:,}" for s in ("train", "valid", "test"))),
        ("partitions", summary["partitions"])]))
    sections.append("<h2>Training</h2>" + _table([
        ("model", repr(run.model)), ("epochs in the checkpoint", run.epoch), ("edges trained", train_edges),
        ("training time (s)", train_seconds),
        ("edges / s", train_edges / train_seconds if train_seconds else 0.0)]))
    evaluations = saved_evaluations(run_dir)
    if evaluations:
        header = "".join(f"<th>{k}</th>" for k in ("split", "ranking", "candidates", "edges", *METRIC_KEYS))
        body = ""
        for e in evaluations:
            cells = [e["split"], "filtered" if e["filtered"] else "raw", e.get("negatives", "all"), e["edges"],
                     *[e[k] for k in METRIC_KEYS]]
            body += "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in cells) + "</tr>"
        sections.append(f"<h2>Evaluation</h2><table class='grid'><tr>{header}</tr>{body}</table>")
    for title, image in _plots(run, records) + entity_maps(run, labels):
        sections.append(f"<h2>{html.escape(title)}</h2><img src='{image}' alt='{html.escape(title)}'>")
    sections.append("<h2>Config</h2><pre>" + html.escape(dump_config(run.config, commented=False)) + "</pre>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>shardgraph report: {html.escape(run_dir.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 900px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ padding: 0.25em 0.8em; text-align: left; border-bottom: 1px solid #ddd; }}
table.grid td, table.grid th {{ text-align: right; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>shardgraph run <code>{html.escape(str(run_dir))}</code></h1>
{''.join(sections)}
</body></html>
"""
    atomic_write_text(out_path, page)
    return out_path
