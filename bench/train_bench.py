"""Training speed, memory and quality: shardgraph vs PyTorch-BigGraph, side by side in one run.

    python bench/train_bench.py [--nodes 100000] [--edges 2000000] [--epochs 10] [--dim 100]
                                [--workers 2] [--partitions 1 4] [--skip-pbg]

Both train the same generated power-law graph (the peers' generator, 1% of edges held out for
test) with the LiveJournal-style setup (operator none, dot, softmax, 50 batch + 50 uniform
negatives, batch 1000, lr 0.1). edges_per_sec = train edges × epochs / wall time of the training
process (start-up, worker spawn and checkpoints included, as PBG's figure is measured);
peak_mem_mb = peak summed PSS of the training process tree. mrr / hits@10 rank every test
edge, both sides, raw, against all entities of the true end's partition (PBG's --eval-all-negs
protocol; the same as all entities when P=1); mrr_all_entities ranks against all entities.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bench.common import (
    PEERS,
    PYTHON,
    REPO,
    emit,
    generated_graph,
    last_json,
    machine_load,
    pbg_python,
    run_measured,
)


def run_shardgraph(graph: dict[str, Path], workdir: Path, partitions: int, args: argparse.Namespace) -> dict:
    dataset, run_dir = workdir / f"sg_data_p{partitions}", workdir / f"sg_run_p{partitions}"
    shutil.rmtree(dataset, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    imported = run_measured([PYTHON, "-m", "shardgraph", "import", str(graph["train"]), "--test", str(graph["test"]),
                             "--out", str(dataset), "--partitions", str(partitions), "--json"])
    load = machine_load()
    trained = run_measured([PYTHON, "-m", "shardgraph", "train", str(REPO / "configs" / "large_graph.toml"),
                            "--dataset", str(dataset), "--out", str(run_dir), "--json",
                            "-p", f"training.epochs={args.epochs}", "-p", f"model.dimension={args.dim}",
                            "-p", f"training.workers={args.workers}"])
    result = last_json(trained["stdout"])
    evaluated = run_measured([PYTHON, "-m", "shardgraph", "eval", str(run_dir), "--split", "test", "--raw",
                              "--json"])
    metrics = last_json(evaluated["stdout"])
    # PBG's --eval-all-negs ranks against the true end's partition only; rank the same way to compare
    per_partition = last_json(run_measured([PYTHON, "-m", "shardgraph", "eval", str(run_dir), "--split", "test",
                                            "--raw", "--negatives", "partition", "--json"])["stdout"])
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(dataset, ignore_errors=True)
    return {"edges_per_sec": round(result["edges"] / trained["seconds"], 1), "seconds": trained["seconds"],
            "peak_mem_mb": trained["peak_mem_mb"], "mrr": round(per_partition["mrr"], 4),
            "hits@10": round(per_partition["hits@10"], 4), "mrr_all_entities": round(metrics["mrr"], 4),
            "hits@10_all_entities": round(metrics["hits@10"], 4), "import_s": imported["seconds"],
            "eval_s": evaluated["seconds"], "loop_edges_per_sec": result["edges_per_sec"], "loadavg": load}


def run_pbg(graph: dict[str, Path], workdir: Path, partitions: int, args: argparse.Namespace) -> dict:
    out = workdir / f"pbg_p{partitions}"
    load = machine_load()
    measured = run_measured([str(pbg_python()), str(PEERS / "pbg" / "run_pbg.py"), str(graph["train"]),
                             str(graph["test"]), str(out), "--partitions", str(partitions), "--epochs",
                             str(args.epochs), "--dim", str(args.dim), "--workers", str(args.workers),
                             "--eval-all-negs"])
    result = last_json(measured["stdout"])
    shutil.rmtree(out, ignore_errors=True)
    return {"edges_per_sec": result["edges_per_sec"], "seconds": result["train_s"],
            "peak_mem_mb": result["peak_pss_mb_train"], "mrr": result["mrr"], "hits@10": result["hits10"],
            "import_s": result["import_s"], "eval_s": result["eval_s"], "loadavg": load}


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
        emit({"bench": "train", "tool": "shardgraph", "setting": setting,
              **run_shardgraph(graph, args.workdir, partitions, args)})
        if not args.skip_pbg:
            emit({"bench": "train", "tool": "pbg", "setting": setting,
                  **run_pbg(graph, args.workdir, partitions, args)})


if __name__ == "__main__":
    main()
