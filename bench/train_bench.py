"""Training speed, memory and quality: shardgraph vs PyTorch-BigGraph, side by side in one run.

    python -m bench.train_bench [--nodes 100000] [--edges 2000000] [--epochs 10] [--dim 100]
                                [--workers 2] [--partitions 1 4] [--skip-pbg]

Both tools train the same generated power-law graph (bench/graphs.py, seed 0, 1% of the edges
held out for test) with PBG's LiveJournal setup (operator none, dot, softmax, 50 batch + 50
uniform negatives, batch 1000, lr 0.1; configs/large_graph.toml). shardgraph runs twice per
partition count: with `training.sampling_correction = false`, the exact objective PBG optimises
(setting `<base>`, as PBG's), and with it on (`<base>_sampling_correction`), an option PBG lacks.

Timed (`seconds`, `edges_per_sec` = train edges × epochs / seconds): the wall time of the
training process alone, for each tool: interpreter start-up and imports, config load, worker
spawn, loading the partitions (shardgraph verifies their checksums), every epoch and the
checkpoint writes. Not timed there: graph generation (cached), import (`import_s`) and
evaluation (`eval_s`), each a process of its own. `loop_edges_per_sec` is shardgraph's own
figure for its training loop only. `peak_mem_mb`: peak summed PSS of the training process tree,
sampled every 0.1 s for both tools (bench.common.TreeSampler).

Quality, raw ranking of each test edge, both ends, labelled by protocol: `mrr_partition` /
`hits@10_partition` against all entities of the true end's partition (PBG's all_negs protocol,
the only full ranking PBG offers; the same as all entities when P = 1, ranked once then): compare
the tools on these; `mrr_all_entities` / `hits@10_all_entities` (shardgraph only) against every entity.
`loadavg` is the 1-minute load when training started: the machine may be shared.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from bench import pbg
from bench.common import PYTHON, REPO, emit, generated_graph, last_json, run_measured


def run_shardgraph(graph: dict[str, Path], workdir: Path, partitions: int, correction: bool,
                   args: argparse.Namespace) -> dict[str, Any]:
    dataset, run_dir = workdir / f"sg_data_p{partitions}", workdir / f"sg_run_p{partitions}"
    shutil.rmtree(dataset, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    imported = run_measured([PYTHON, "-m", "shardgraph", "import", str(graph["train"]), "--test", str(graph["test"]),
                             "--out", str(dataset), "--partitions", str(partitions), "--json"])
    trained = run_measured([PYTHON, "-m", "shardgraph", "train", str(REPO / "configs" / "large_graph.toml"),
                            "--dataset", str(dataset), "--out", str(run_dir), "--json",
                            "-p", f"training.epochs={args.epochs}", "-p", f"model.dimension={args.dim}",
                            "-p", f"training.workers={args.workers}",
                            "-p", f"training.sampling_correction={str(correction).lower()}"])
    result = last_json(trained["stdout"])
    everything = run_measured([PYTHON, "-m", "shardgraph", "eval", str(run_dir), "--split", "test", "--raw",
                               "--json"])
    all_entities = last_json(everything["stdout"])
    per_partition = all_entities if partitions == 1 else \
        last_json(run_measured([PYTHON, "-m", "shardgraph", "eval", str(run_dir), "--split", "test", "--raw",
                                "--negatives", "partition", "--json"])["stdout"])
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(dataset, ignore_errors=True)
    return {"sampling_correction": correction, "edges_per_sec": round(result["edges"] / trained["seconds"], 1),
            "seconds": trained["seconds"], "peak_mem_mb": trained["peak_mem_mb"],
            "mrr_partition": round(per_partition["mrr"], 4), "hits@10_partition": round(per_partition["hits@10"], 4),
            "mrr_all_entities": round(all_entities["mrr"], 4),
            "hits@10_all_entities": round(all_entities["hits@10"], 4), "import_s": imported["seconds"],
            "eval_s": everything["seconds"], "loop_edges_per_sec": result["edges_per_sec"],
            "loadavg": trained["loadavg_before"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=2_000_000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sg-bench"))
    ap.add_argument("--skip-pbg", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    graph = generated_graph(args.workdir, args.nodes, args.edges, holdout=0.01)
    for partitions in args.partitions:
        setting = f"{args.nodes}n_{args.edges}e_P{partitions}_d{args.dim}_e{args.epochs}_w{args.workers}"
        for correction in (False, True):
            emit({"bench": "train", "tool": "shardgraph",
                  "setting": f"{setting}_sampling_correction" if correction else setting,
                  **run_shardgraph(graph, args.workdir, partitions, correction, args)})
        if not args.skip_pbg:
            out = args.workdir / f"pbg_p{partitions}"
            shutil.rmtree(out, ignore_errors=True)
            emit({"bench": "train", "tool": "pbg", "setting": setting,
                  **pbg.train_and_evaluate(graph["train"], graph["test"], out, partitions, args.epochs, args.dim,
                                           args.workers)})
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
