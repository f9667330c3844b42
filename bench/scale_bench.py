"""Out-of-core training: memory bound and hidden I/O on a graph whose embeddings fill 2 GB.

    python -m bench.scale_bench [--nodes 4000000] [--edges 40000000] [--dim 128] [--partitions 16]
                                [--buffer 4] [--parts scale pbg fp16]

scale: generate (cached) a power-law graph (bench/graphs.py), import it with P=16, train one
       epoch with buffer_partitions=4 (swap-minimising bucket order) and the same epoch with
       every partition in memory; edges/s of each, and the ratio of the two throughputs
       (target >= 0.8, peak <= 1.2 GB for the buffered run).
pbg:   the 100k-node / 2M-edge graph (1% held out) at P=16 (1 epoch by default, d=100, 2 workers),
       shardgraph (buffer of 4, with sampling_correction off: PBG's objective, and on) vs
       PyTorch-BigGraph side by side: edges/s, peak memory, raw test MRR against the true end's
       partition (`mrr_partition`, PBG's all_negs protocol; shardgraph also against all entities:
       `mrr_all_entities`). PBG's importer runs with 512 KiB HDF5 chunks instead of its 50 MiB
       ones (bench/peers/pbg/site/sitecustomize.py): the same edge files, 1.5 MB each on disk
       instead of 157 MB (40 GB for 256 buckets).
fp16:  the 100k / 2M graph trained with float32, float16 and bfloat16 storage: full-ranking
       raw test MRR and the bytes of the embedding tables.

Timed (`seconds`, `edges_per_sec` = train edges × epochs / seconds): the wall time of the
training process alone, for each tool: start-up and imports, worker spawn, partition loads
(shardgraph verifies checksums) and swaps, the epochs, checkpoint writes. Not timed: graph
generation, import (its own line in `scale`, else untimed), evaluation. `loop_edges_per_sec`
is shardgraph's figure for its training loop only. `peak_mem_mb`: peak summed PSS of the
process tree, sampled every 0.1 s for every tool (bench.common.TreeSampler).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bench import pbg
from bench.common import PYTHON, REPO, emit, generated_graph, last_json, run_measured


def shardgraph_train(dataset: Path, run_dir: Path, *params: str) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)
    result = run_measured([PYTHON, "-m", "shardgraph", "train", str(REPO / "configs" / "large_graph.toml"),
                           "--dataset", str(dataset), "--out", str(run_dir), "--json",
                           *[x for p in params for x in ("-p", p)]])
    return {**result, "summary": last_json(result["stdout"])}


def part_scale(args: argparse.Namespace) -> None:
    graph = generated_graph(args.workdir, args.nodes, args.edges)
    dataset = args.workdir / f"scale_data_p{args.partitions}"
    setting = f"{args.nodes}n_{args.edges}e_d{args.dim}_P{args.partitions}"
    if not (dataset / "manifest.json").exists():
        imported = run_measured([PYTHON, "-m", "shardgraph", "import", str(graph["train"]), "--out", str(dataset),
                                 "--partitions", str(args.partitions), "--json"])
        emit({"bench": "scale", "tool": "shardgraph", "setting": f"{setting}_import",
              "edges_per_sec": round(args.edges / imported["seconds"], 1), "seconds": imported["seconds"],
              "peak_mem_mb": imported["peak_mem_mb"]})
    results = {}
    for name, buffer, order in (("buffer", args.buffer, "beta"), ("in_memory", 0, "inside_out")):
        run = shardgraph_train(dataset, args.workdir / f"scale_run_{name}", "training.epochs=1",
                               f"model.dimension={args.dim}", f"storage.buffer_partitions={buffer}",
                               f"training.bucket_order={order}")
        summary = run["summary"]
        results[name] = summary["edges"] / run["seconds"]
        emit({"bench": "scale", "tool": "shardgraph", "setting": f"{setting}_{name}{buffer or ''}",
              "edges_per_sec": round(results[name], 1), "loop_edges_per_sec": summary["edges_per_sec"],
              "seconds": run["seconds"], "peak_mem_mb": run["peak_mem_mb"], "planned_mb": summary["planned_mb"]})
        shutil.rmtree(args.workdir / f"scale_run_{name}", ignore_errors=True)
    emit({"bench": "scale", "tool": "shardgraph", "setting": f"{setting}_buffer_vs_memory",
          "ratio": round(results["buffer"] / results["in_memory"], 3)})


def part_pbg(args: argparse.Namespace) -> None:
    graph = generated_graph(args.workdir, 100_000, 2_000_000, holdout=0.01)
    dataset = args.workdir / "scale_small_p16"
    shutil.rmtree(dataset, ignore_errors=True)
    run_measured([PYTHON, "-m", "shardgraph", "import", str(graph["train"]), "--test", str(graph["test"]), "--out",
                  str(dataset), "--partitions", "16", "--json"])
    epochs = args.pbg_epochs
    setting = f"100000n_2000000e_P16_d100_e{epochs}_w2"
    run_dir = args.workdir / "scale_small_run"
    for correction in (False, True):
        run = shardgraph_train(dataset, run_dir, f"training.epochs={epochs}", "training.workers=2",
                               "storage.buffer_partitions=4", "training.bucket_order=beta",
                               f"training.sampling_correction={str(correction).lower()}")
        evaluation = {negatives: last_json(run_measured([PYTHON, "-m", "shardgraph", "eval", str(run_dir), "--raw",
                                                         "--negatives", negatives, "--json"])["stdout"])
                      for negatives in ("partition", "all")}
        emit({"bench": "scale", "tool": "shardgraph",
              "setting": f"{setting}_sampling_correction" if correction else setting, "sampling_correction": correction,
              "edges_per_sec": round(run["summary"]["edges"] / run["seconds"], 1), "seconds": run["seconds"],
              "peak_mem_mb": run["peak_mem_mb"], "mrr_partition": round(evaluation["partition"]["mrr"], 4),
              "mrr_all_entities": round(evaluation["all"]["mrr"], 4), "loadavg": run["loadavg_before"]})
        shutil.rmtree(run_dir, ignore_errors=True)
    out = args.workdir / "scale_pbg"
    shutil.rmtree(out, ignore_errors=True)
    result = pbg.train_and_evaluate(graph["train"], graph["test"], out, 16, epochs, 100, 2, small_chunks=True)
    emit({"bench": "scale", "tool": "pbg", "setting": setting, **result})
    shutil.rmtree(out, ignore_errors=True)


def part_fp16(args: argparse.Namespace) -> None:
    graph = generated_graph(args.workdir, 100_000, 2_000_000, holdout=0.01)
    dataset = args.workdir / "scale_small_p1"
    shutil.rmtree(dataset, ignore_errors=True)
    run_measured([PYTHON, "-m", "shardgraph", "import", str(graph["train"]), "--test", str(graph["test"]), "--out",
                  str(dataset), "--json"])
    for dtype in args.dtypes:
        run_dir = args.workdir / f"scale_{dtype}"
        run = shardgraph_train(dataset, run_dir, "training.epochs=10", "training.workers=2",
                               f"storage.storage_dtype={dtype}")
        evaluation = last_json(run_measured([PYTHON, "-m", "shardgraph", "eval", str(run_dir), "--raw",
                                             "--json"])["stdout"])
        manifest = json.loads((run_dir / "checkpoint" / "manifest.json").read_text())
        files = manifest["partitions"]["entity"]["0"]
        embedding_mb = (run_dir / "checkpoint" / files["embeddings"]).stat().st_size / 2**20
        emit({"bench": "scale", "tool": "shardgraph", "setting": f"100000n_2000000e_storage_{dtype}",
              "mrr_all_entities": round(evaluation["mrr"], 4),
              "hits@10_all_entities": round(evaluation["hits@10"], 4),
              "embedding_mb": round(embedding_mb, 1), "peak_mem_mb": run["peak_mem_mb"],
              "edges_per_sec": round(run["summary"]["edges"] / run["seconds"], 1)})
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4_000_000)
    ap.add_argument("--edges", type=int, default=40_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--buffer", type=int, default=4)
    ap.add_argument("--pbg-epochs", type=int, default=1,
                    help="epochs of the P=16 comparison (PBG spends ~2 s per bucket here: 256 buckets an epoch)")
    ap.add_argument("--parts", nargs="+", default=["scale", "pbg", "fp16"], choices=["scale", "pbg", "fp16"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"],
                    choices=["float32", "float16", "bfloat16"], help="storage dtypes of the fp16 part")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sg-bench"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        {"scale": part_scale, "pbg": part_pbg, "fp16": part_fp16}[part](args)


if __name__ == "__main__":
    main()
