"""Nearest neighbours: recall@10 and latency of approximate indexes (HNSW, IVF) against exact search.

    python -m bench.neighbors_bench [--nodes 1000000] [--edges 10000000] [--dim 100] [--queries 1000]

The vectors are real embeddings: the benches' generated power-law graph with communities
(bench/graphs.py) is imported and trained for one epoch (large-graph config), once, cached in
the workdir. Then each index is built with `shardgraph index`'s code, recall@10 is measured on
random entities against exact search (cosine), shardgraph only (no peer).

Timed, in this process: `ms_per_query`, one query at a time through EmbeddingModel.neighbors
(id lookup, search and names included; one warm-up query first); `faiss_ms_per_query`, the
index's raw search of one vector; `build_s`, building the index; `exact_batched`, the exact
search of all queries in one call, per query. Not timed: generation, import, training, loading
the model.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from bench.common import PYTHON, REPO, emit, generated_graph, run_measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--kinds", nargs="+", default=["hnsw", "ivf"])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sg-bench"))
    args = ap.parse_args()
    graph = generated_graph(args.workdir, args.nodes, args.edges)
    dataset, run_dir = args.workdir / "nn_data", args.workdir / "nn_run"
    if not (run_dir / "checkpoint" / "manifest.json").exists():
        shutil.rmtree(dataset, ignore_errors=True)
        run_measured([PYTHON, "-m", "shardgraph", "import", str(graph["train"]), "--out", str(dataset), "--json"])
        run_measured([PYTHON, "-m", "shardgraph", "train", str(REPO / "configs" / "large_graph.toml"), "--dataset",
                      str(dataset), "--out", str(run_dir), "--overwrite", "-p", "training.epochs=1", "-p",
                      f"model.dimension={args.dim}", "--json"])
    from shardgraph.embeddings.index import NeighborIndex, build_index
    from shardgraph.embeddings.model import load

    model = load(run_dir)
    names = model.index().names
    rng = np.random.default_rng(0)
    queries = [names[int(i)].as_py() for i in rng.choice(len(names), size=args.queries, replace=False)]
    started = time.perf_counter()
    exact = [[p.id for p in r] for r in model.neighbors(queries, k=10, metric="cos")]
    exact_ms = (time.perf_counter() - started) / len(queries) * 1e3
    setting = f"{len(names)}x{args.dim}"
    emit({"bench": "neighbors", "tool": "shardgraph", "setting": f"{setting}_exact_batched", "recall@10": 1.0,
          "ms_per_query": round(exact_ms, 3)})
    for kind in args.kinds:
        path = args.workdir / f"nn_index_{kind}"
        built = build_index(model, path, kind=kind, metric="cos", overwrite=True)
        index = NeighborIndex.load(path)
        model.neighbors(queries[0], k=10, index=index)  # warm
        found = []
        started = time.perf_counter()
        for q in queries:
            found.append([p.id for p in model.neighbors(q, k=10, index=index)])
        ms = (time.perf_counter() - started) / len(queries) * 1e3
        recall = np.mean([len(set(e) & set(f)) / 10 for e, f in zip(exact, found, strict=True)])
        raw = index.search(model.vectors(queries[:200]), 11)  # noqa: F841 - warm the raw path
        started = time.perf_counter()
        for q in model.vectors(queries):
            index.search(q[None, :], 11)
        raw_ms = (time.perf_counter() - started) / len(queries) * 1e3
        emit({"bench": "neighbors", "tool": "shardgraph", "setting": f"{setting}_{kind}", "recall@10": round(recall, 4),
              "ms_per_query": round(ms, 3), "faiss_ms_per_query": round(raw_ms, 3), "build_s": built["build_s"],
              "index_recall@10_at_build": built["recall@10"],
              "search_setting": built.get("ef_search", built.get("nprobe"))})


if __name__ == "__main__":
    main()
