"""`shardgraph report RUN`: one self-contained HTML page (plots inlined as PNG) about a run.

It reads what the run directory already holds: the config, metrics.jsonl (per-bucket and
per-epoch statistics, evaluations during training), saved evaluation results, and a
sample of the embeddings of the last checkpoint.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from shardgraph.config import dump_config
from shardgraph.storage.run import TrainedRun
from shardgraph.utils.atomic import atomic_write_text

METRIC_KEYS = ("mrr", "mr", "hits@1", "hits@3", "hits@10", "auc")


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


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of a run; returns its path (default RUN/report.html)."""
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
    for title, image in _plots(run, records):
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
