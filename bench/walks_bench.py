"""Walk embeddings, end to end: shardgraph vs PecanPy + gensim, side by side in one run.

    python -m bench.walks_bench [--settings blogcatalog-deepwalk ppi-deepwalk powerlaw-1m-p0.25-q4]
                                [--skip-peer] [--workers 2] [--repeats 10]
                                [--storage-dtypes float32 bfloat16]

Both tools walk the same graph with the same walks (walks per node, walk length, p, q) and window,
d = 128, and their embeddings are scored by the same code (`shardgraph.walks.classify`: the node2vec
paper's protocol, one-vs-rest logistic regression, 50% of the nodes labelled, k = true number of
labels, Macro/Micro-F1 over `--repeats` splits). The peer is PecanPy 2.0.9's walks + gensim Word2Vec
(skip-gram, 5 negatives, 1 epoch; installed by bench/peers/node2vec.sh), run by
bench/peers/node2vec_run.py.

seconds = end to end: shardgraph's `train` process (CSR, walks, pairs written as buckets, training,
checkpoint; the import is listed apart as import_s), the peer's walks + word2vec (its edge-list
loading is listed apart as load_s). walk_seconds / train_seconds split it. peak_mem_mb = peak summed
PSS of the process tree. powerlaw-1m-*: the peers' generated power-law graph, 1M nodes / 10M edges,
walks cut to --powerlaw-walks walks of length --powerlaw-length for both tools; no labels.
--storage-dtypes: shardgraph's embedding tables in float32 (as the peer's) and/or bfloat16 (half
the memory; the fused step widens rows to float32 and rounds its writes stochastically).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import DATASETS, PYTHON, REPO, emit, generated_graph, last_json, machine_load, run_measured

N2V_VENV = Path(os.environ.get("N2V_VENV", "/tmp/peer-n2v/venv"))
PEER_RUNNER = REPO / "bench" / "peers" / "node2vec_run.py"

# name -> (edge file, columns for `shardgraph import`, label file)
GRAPHS: dict[str, tuple[Path, str, Path | None]] = {
    "blogcatalog": (DATASETS / "blogcatalog" / "edges.csv.gz", "lhs,rhs",
                    DATASETS / "blogcatalog" / "group-edges.csv.gz"),
    "ppi": (DATASETS / "ppi-node2vec" / "ppi.edgelist.gz", "lhs,rhs", DATASETS / "ppi-node2vec" / "ppi_labels.txt"),
}
SETTINGS: dict[str, tuple[str, float, float]] = {
    "blogcatalog-deepwalk": ("blogcatalog", 1.0, 1.0),
    "blogcatalog-p0.25-q0.25": ("blogcatalog", 0.25, 0.25),
    "ppi-deepwalk": ("ppi", 1.0, 1.0),
    "ppi-p4-q1": ("ppi", 4.0, 1.0),
    "powerlaw-1m-p0.25-q4": ("powerlaw", 0.25, 4.0),
}


def walks_of(setting: str, args: argparse.Namespace) -> tuple[int, int]:
    if setting.startswith("powerlaw"):
        return args.powerlaw_walks, args.powerlaw_length
    return 10, 80


def run_shardgraph(setting: str, edges: Path, columns: str, labels: Path | None, p: float, q: float,
                   workdir: Path, args: argparse.Namespace, storage_dtype: str) -> dict[str, Any]:
    from shardgraph.walks.classify import evaluate_nodes

    dataset, run_dir = workdir / f"sg_data_{setting}", workdir / f"sg_run_{setting}"
    shutil.rmtree(dataset, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    imported = run_measured([PYTHON, "-m", "shardgraph", "import", str(edges), "--out", str(dataset), "--columns",
                             columns, "--json"])
    walks, length = walks_of(setting, args)
    config = "deepwalk.toml" if p == q == 1.0 else "node2vec.toml"
    extra = [item for override in args.param for item in ("-p", override)]
    load = machine_load()
    trained = run_measured([PYTHON, "-m", "shardgraph", "train", str(REPO / "configs" / config), "--dataset",
                            str(dataset), "--out", str(run_dir), "--json", "-p", f"walks.p={p}",
                            "-p", f"walks.q={q}",
                            "-p", f"walks.walks_per_node={walks}", "-p", f"walks.walk_length={length}",
                            "-p", f"training.workers={args.workers}",
                            "-p", f"storage.storage_dtype={storage_dtype}", *extra])
    result = last_json(trained["stdout"])
    stats = json.loads((run_dir / "walks" / "manifest.json").read_text())["walk_stats"]
    record: dict[str, Any] = {
        "seconds": trained["seconds"], "walk_seconds": stats["seconds"], "train_seconds": result["train_s"],
        "peak_mem_mb": trained["peak_mem_mb"], "pairs": stats["pairs"], "import_s": imported["seconds"],
        "loadavg": load, "loadavg_after": machine_load(),
    }
    if labels is not None:
        scored = evaluate_nodes(run_dir, labels, train_fractions=[0.5], repeats=args.repeats)["results"][0]
        record |= {"macro_f1": round(scored["macro_f1"], 4), "macro_f1_std": round(scored["macro_f1_std"], 4),
                   "micro_f1": round(scored["micro_f1"], 4), "micro_f1_std": round(scored["micro_f1_std"], 4)}
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(dataset, ignore_errors=True)
    return record


def run_peer(setting: str, edges: Path, columns: str, labels: Path | None, p: float, q: float, workdir: Path,
             args: argparse.Namespace) -> dict[str, Any]:
    from shardgraph.walks.classify import classify_nodes, read_labels

    python = N2V_VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"PecanPy + gensim are not installed: run {REPO / 'bench' / 'peers' / 'node2vec.sh'} first")
    out = workdir / f"peer_{setting}.npz"
    walks, length = walks_of(setting, args)
    cols = "0,2" if setting.startswith("powerlaw") else "0,1"
    load = machine_load()
    measured = run_measured([str(python), str(PEER_RUNNER), str(edges), "--out", str(out), "--p", str(p), "--q",
                             str(q), "--num-walks", str(walks), "--walk-length", str(length), "--cols", cols,
                             "--workers", str(args.workers), *(["--time-limit", str(args.peer_time_limit)]
                                                               if args.peer_time_limit else [])])
    result = last_json(measured["stdout"])
    record: dict[str, Any] = {
        "seconds": result.get("seconds"), "walk_seconds": result.get("walk_s"),
        "train_seconds": result.get("w2v_s"), "peak_mem_mb": measured["peak_mem_mb"],
        "load_s": result.get("load_s"), "wall_s": measured["seconds"], "loadavg": load,
        "loadavg_after": machine_load(), "status": result.get("status", "ok"),
    }
    if labels is not None and out.exists():
        loaded = np.load(out, allow_pickle=False)
        rows = {str(node): i for i, node in enumerate(loaded["IDs"])}
        by_node = read_labels(labels)
        nodes = [n for n in by_node if n in rows]
        vectors = np.asarray(loaded["data"], dtype=np.float64)[[rows[n] for n in nodes]]
        scored = classify_nodes(vectors, [by_node[n] for n in nodes], train_fractions=[0.5],
                                repeats=args.repeats)[0]
        record |= {"macro_f1": round(scored["macro_f1"], 4), "macro_f1_std": round(scored["macro_f1_std"], 4),
                   "micro_f1": round(scored["micro_f1"], 4), "micro_f1_std": round(scored["micro_f1_std"], 4)}
    out.unlink(missing_ok=True)
    return record


def as_tsv(path: Path, out: Path) -> Path:
    """The first two fields of a whitespace-separated edge list, tab-separated."""
    if not out.exists():
        with gzip.open(path, "rt") as f, open(out, "w") as g:
            for line in f:
                fields = line.split()
                if len(fields) >= 2:
                    g.write(f"{fields[0]}\t{fields[1]}\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=["blogcatalog-deepwalk"], choices=list(SETTINGS))
    ap.add_argument("--workdir", default="/tmp/walks_bench")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-shardgraph", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep shardgraph's dataset and run directories")
    ap.add_argument("--powerlaw-walks", type=int, default=1)
    ap.add_argument("--powerlaw-length", type=int, default=20)
    ap.add_argument("--peer-time-limit", type=float, default=0, help="abort the peer's walks after S seconds")
    ap.add_argument("--storage-dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                    help="shardgraph's table dtype (storage.storage_dtype): a line for each")
    ap.add_argument("-p", "--param", action="append", default=[], help="extra shardgraph config override")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for setting in args.settings:
        graph, p, q = SETTINGS[setting]
        if graph == "powerlaw":
            edges, columns, labels = generated_graph(workdir, 1_000_000, 10_000_000)["train"], "lhs,-,rhs", None
        else:
            edges, columns, labels = GRAPHS[graph]
            if graph == "ppi":  # space-separated "u v 1.0": as a two-column TSV for the importer (not timed)
                edges = as_tsv(edges, workdir / "ppi.tsv")
        walks, length = walks_of(setting, args)
        base = {"bench": "walks", "setting": setting, "p": p, "q": q, "walks_per_node": walks, "walk_length": length,
                "window": 10, "dim": 128}
        for dtype in [] if args.skip_shardgraph else args.storage_dtypes:
            emit(base | {"tool": "shardgraph", "storage_dtype": dtype}
                 | run_shardgraph(setting, edges, columns, labels, p, q, workdir, args, dtype))
        if not args.skip_peer:
            emit(base | {"tool": "pecanpy+gensim"} | run_peer(setting, edges, columns, labels, p, q, workdir, args))


if __name__ == "__main__":
    main()
