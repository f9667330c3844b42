"""GraphSAGE at scale: a generated graph of 1M nodes / 10M edges, 3 hashed text columns, 100 classes.

    python bench/sage_scale_bench.py [--nodes 1000000] [--edges 10000000] [--workdir /tmp/sage_scale]

Nodes belong to 100 planted classes; 80% of each node's edges stay inside its class; the three
columns are words drawn from per-class vocabularies (with shared noise words). 10% of the nodes
are labelled. Steps, each its own process (peak summed PSS of its process tree): import (edges,
node table, labels), one epoch of mini-batches (fan-outs [25, 10], batch 512) + validation,
top-2 labels of every unlabelled node. One JSON line per step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, machine_load, run_measured

CLASSES = 100


def generate(workdir: Path, nodes: int, edges: int, seed: int = 0) -> None:
    """nodes.csv (id, name, category, tags), edges.tsv, labels.tsv (10% of the nodes)."""
    if (workdir / "labels.tsv").exists():
        return
    rng = np.random.default_rng(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    label = rng.integers(0, CLASSES, nodes)
    order = np.argsort(label, kind="stable")
    starts = np.searchsorted(label[order], np.arange(CLASSES + 1))
    tails = rng.integers(0, nodes, edges)
    inside = rng.random(edges) < 0.8
    cls = label[tails]
    pick = starts[cls] + (rng.random(edges) * (starts[cls + 1] - starts[cls])).astype(np.int64)
    heads = np.where(inside, order[pick], rng.integers(0, nodes, edges))
    ids = pa.array(np.char.add("n", np.arange(nodes).astype(str)))
    for start in range(0, edges, 2_000_000):
        stop = min(edges, start + 2_000_000)
        table = pa.table({"a": ids.take(pa.array(tails[start:stop])), "b": ids.take(pa.array(heads[start:stop]))})
        with open(workdir / "edges.tsv", "ab") as f:
            pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))

    def words(prefix: str, vocabulary: int, count: int, noise: float) -> pa.Array:
        own = rng.integers(0, vocabulary, (nodes, count))
        token = np.char.add(np.char.add(prefix, label[:, None].astype(str)), np.char.add("_", own.astype(str)))
        shared = np.char.add(prefix + "common", rng.integers(0, 50, (nodes, count)).astype(str))
        token = np.where(rng.random((nodes, count)) < noise, shared, token)
        joined = token[:, 0]
        for j in range(1, count):
            joined = np.char.add(np.char.add(joined, " "), token[:, j])
        return pa.array(joined)

    table = pa.table({"id": ids, "name": words("w", 20, 3, 0.5), "category": words("c", 3, 1, 0.6),
                      "tags": words("t", 10, 2, 0.5)})
    pacsv.write_csv(table, workdir / "nodes.csv", pacsv.WriteOptions(quoting_style="none"))
    labelled = rng.choice(nodes, nodes // 10, replace=False)
    pacsv.write_csv(pa.table({"id": ids.take(pa.array(labelled)), "label": pa.array(np.char.add(
        "class", label[labelled].astype(str)))}), workdir / "labels.tsv",
        pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))


CONFIG = """
[data]
dataset = "{dataset}"
[nodes]
[nodes.features.name]
encoder = "hash"
tokenizer = "whitespace"
n_features = 256
[nodes.features.category]
encoder = "hash"
n_features = 64
[nodes.features.tags]
encoder = "hash"
tokenizer = "whitespace"
n_features = 128
[sage]
mode = "minibatch"
fanouts = [25, 10]
batch_size = 512
epochs = 1
hidden = 64
threads = {threads}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=10_000_000)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sage_scale"))
    args = parser.parse_args()
    work = args.workdir
    started = time.perf_counter()
    generate(work, args.nodes, args.edges)
    generate_seconds = time.perf_counter() - started
    config = work / "config.toml"
    config.write_text(CONFIG.format(dataset=work / "ds", threads=args.threads))
    sg = [sys.executable, "-m", "shardgraph"]
    env = {"PYTHONWARNINGS": "ignore"}
    common = {"bench": "sage_scale", "tool": "shardgraph", "nodes": args.nodes, "edges": args.edges}
    load = machine_load()
    step = run_measured([*sg, "import", str(work / "edges.tsv"), "--nodes", str(work / "nodes.csv"), "--labels",
                         str(work / "labels.tsv"), "--config", str(config), "--out", str(work / "ds"),
                         "--overwrite", "--no-progress"], env=env)
    emit({**common, "setting": "import", "seconds": step["seconds"], "peak_mem_mb": step["peak_mem_mb"],
          "edges_per_sec": round(args.edges / step["seconds"]), "generate_seconds": round(generate_seconds, 1),
          "load_before": load, "load_after": machine_load()})
    load = machine_load()
    step = run_measured([*sg, "train-sage", str(config), "--out", str(work / "run"), "--overwrite", "--json"],
                        env=env)
    metrics = step["stdout"].strip().splitlines()[-1]
    import json

    result = json.loads(metrics)
    emit({**common, "setting": "train-1-epoch", "seconds": result["seconds"], "wall_seconds": step["seconds"],
          "peak_mem_mb": step["peak_mem_mb"], "accuracy": result["test"]["accuracy"],
          "top2_accuracy": result["test"]["top2_accuracy"], "train_nodes": result["splits"]["train"],
          "load_before": load, "load_after": machine_load()})
    load = machine_load()
    step = run_measured([*sg, "predict-labels", str(work / "run"), "-k", "2", "--out", str(work / "preds.parquet"),
                         "--json"], env=env)
    predicted = json.loads(step["stdout"].strip().splitlines()[-1])["nodes"]
    emit({**common, "setting": "predict-top2", "seconds": step["seconds"], "peak_mem_mb": step["peak_mem_mb"],
          "nodes_predicted": predicted, "nodes_per_sec": round(predicted / step["seconds"]),
          "load_before": load, "load_after": machine_load()})


if __name__ == "__main__":
    main()
