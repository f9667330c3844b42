"""Does the order of the input file change what training learns? Sorted vs shuffled edges.

    python -m bench.order_bench [--epochs 5] [--chunk 20000] [--workers 2]

Writes FB15k-237's training edges (shipped in data/) twice, sorted by (lhs, relation, rhs) and
shuffled, imports both, trains the shipped config on each for --epochs epochs with --workers
HOGWILD workers and a small `training.edge_chunk_size` (so that each worker reads its share of the
bucket in many chunks, as a large graph would), then ranks the test split (filtered, all entities).
The MRRs should agree within seed noise: the importer shuffles each training bucket on disk
(`data.shuffle`, on by default), so a sorted file does not give chunks (and their batch negatives)
of a narrow range of ids. The setting `sorted-noshuffle` imports the sorted file with
`-p data.shuffle=false` to show what that shuffle is worth. Timed: nothing (quality only).
"""

from __future__ import annotations

import argparse
import gzip
import random
import shutil
from pathlib import Path

from bench.common import PYTHON, REPO, emit, last_json, machine_load, run_measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/shardgraph-bench/order"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--orders", nargs="+", default=["sorted", "shuffled", "sorted-noshuffle"],
                        choices=["sorted", "shuffled", "sorted-noshuffle"])
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = REPO / "data" / "fb15k-237"
    with gzip.open(data / "train.txt.gz", "rt") as f:
        lines = [line for line in f if line.strip()]
    orders = {"sorted": sorted(lines), "shuffled": random.Random(0).sample(lines, len(lines))}
    orders["sorted-noshuffle"] = orders["sorted"]
    for name in args.orders:
        ordered = orders[name]
        no_shuffle = ["-p", "data.shuffle=false"] if name.endswith("noshuffle") else []
        edges = args.workdir / f"train_{name}.tsv"
        edges.write_text("".join(ordered))
        dataset, run = args.workdir / f"data_{name}", args.workdir / f"run_{name}"
        shutil.rmtree(dataset, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)
        run_measured([PYTHON, "-m", "shardgraph", "import", str(edges), "--valid", str(data / "valid.txt.gz"),
                      "--test", str(data / "test.txt.gz"), "--out", str(dataset), *no_shuffle])
        run_measured([PYTHON, "-m", "shardgraph", "train", str(REPO / "configs" / "fb15k237.toml"), "--dataset",
                      str(dataset), "--out", str(run), "--no-progress", "-p", f"training.epochs={args.epochs}",
                      "-p", "training.eval_every=0", "-p", f"training.workers={args.workers}",
                      "-p", f"training.edge_chunk_size={args.chunk}"])
        result = last_json(run_measured([PYTHON, "-m", "shardgraph", "eval", str(run), "--split", "test",
                                         "--filtered", "--json"])["stdout"])
        emit({"bench": "order", "tool": "shardgraph", "setting": f"fb15k237-{name}-chunk{args.chunk}-"
              f"workers{args.workers}-epochs{args.epochs}", "mrr": result["mrr"], "hits@10": result["hits@10"],
              "load": machine_load()})


if __name__ == "__main__":
    main()
