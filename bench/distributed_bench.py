"""Distributed training: two trainers over loopback, shardgraph (torchrun) vs PyTorch-BigGraph's
distributed mode, plus shardgraph's single-process run for the quality comparison.

    python -m bench.distributed_bench [--nodes 100000] [--edges 2000000] [--partitions 4] [--epochs 10]

Both tools train the same generated graph (bench/graphs.py, 1% held out), P=4, d=100, PBG's
LiveJournal setup (configs/large_graph.toml), two trainers with one worker each on this
machine. shardgraph runs with `training.sampling_correction` off (PBG's objective; setting
`<base>`) and on (`<base>_sampling_correction`), each once distributed and once as a single
process with 2 workers (`..._1process...`).

Timed (`seconds`, `edges_per_sec` = train edges × epochs / seconds): the wall time from starting
the trainers until the last one ends (torchrun and its rendezvous, both trainers' start-up and
imports, partition loads with checksum verification for shardgraph, every epoch, checkpoint
writes). Not timed: graph generation, import, evaluation. `peak_mem_mb`: peak over time of the
PSS summed over every trainer process tree together, sampled every 0.1 s for both tools
(bench.common.TreeSampler).

Quality, raw ranking of each test edge (both ends), labelled by protocol:
`mrr_all_entities` / `hits@10_all_entities` rank against every entity (shardgraph only);
`mrr_partition` / `hits@10_partition` rank against all entities of the true end's partition,
PBG's all_negs protocol, the only one PBG has: compare PBG with shardgraph on these keys.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
from pathlib import Path

from bench import pbg
from bench.common import PYTHON, REPO, emit, generated_graph, last_json, run_group, run_measured


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shardgraph_quality(run_dir: Path) -> dict[str, float]:
    """Raw test MRR / Hits@10 of a run under both protocols (see the module docstring)."""
    quality = {}
    for negatives, label in (("all", "all_entities"), ("partition", "partition")):
        metrics = last_json(run_measured([PYTHON, "-m", "shardgraph", "eval", str(run_dir), "--raw", "--negatives",
                                          negatives, "--json"])["stdout"])
        quality[f"mrr_{label}"] = round(metrics["mrr"], 4)
        quality[f"hits@10_{label}"] = round(metrics["hits@10"], 4)
    return quality


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=2_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sg-bench/distributed"))
    ap.add_argument("--skip-pbg", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    graph = generated_graph(args.workdir.parent, args.nodes, args.edges, holdout=0.01)
    setting = f"{args.nodes}n_{args.edges}e_P{args.partitions}_d{args.dim}_e{args.epochs}_2trainers"
    dataset = args.workdir / "sg_data"
    shutil.rmtree(dataset, ignore_errors=True)
    run_measured([PYTHON, "-m", "shardgraph", "import", str(graph["train"]), "--test", str(graph["test"]), "--out",
                  str(dataset), "--partitions", str(args.partitions), "--json"])
    train_edges = json.loads((dataset / "manifest.json").read_text())["splits"]["train"]["edges"]
    config = str(REPO / "configs" / "large_graph.toml")

    for correction in (False, True):
        common = ["-p", f"training.epochs={args.epochs}", "-p", f"model.dimension={args.dim}",
                  "-p", f"training.sampling_correction={str(correction).lower()}"]
        suffix = "_sampling_correction" if correction else ""
        single_dir = args.workdir / "sg_single"
        shutil.rmtree(single_dir, ignore_errors=True)
        single = run_measured([PYTHON, "-m", "shardgraph", "train", config, "--dataset", str(dataset), "--out",
                               str(single_dir), "--json", "-p", "training.workers=2", *common])
        single_quality = shardgraph_quality(single_dir)
        emit({"bench": "distributed", "tool": "shardgraph", "sampling_correction": correction,
              "setting": setting.replace("2trainers", "1process") + suffix,
              "edges_per_sec": round(train_edges * args.epochs / single["seconds"], 1), "seconds": single["seconds"],
              "peak_mem_mb": single["peak_mem_mb"], **single_quality, "loadavg": single["loadavg_before"]})
        shutil.rmtree(single_dir, ignore_errors=True)

        dist_dir = args.workdir / "sg_dist"
        shutil.rmtree(dist_dir, ignore_errors=True)
        torchrun = [PYTHON, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                    "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "-m", "shardgraph",
                    "train", config, "--dataset", str(dataset), "--out", str(dist_dir), "--no-progress",
                    "-p", "training.workers=1", *common]
        distributed = run_measured(torchrun)
        dist_quality = shardgraph_quality(dist_dir)
        emit({"bench": "distributed", "tool": "shardgraph", "setting": setting + suffix,
              "sampling_correction": correction,
              "edges_per_sec": round(train_edges * args.epochs / distributed["seconds"], 1),
              "seconds": distributed["seconds"], "peak_mem_mb": distributed["peak_mem_mb"], **dist_quality,
              "mrr_all_entities_gap_vs_1process": round(dist_quality["mrr_all_entities"]
                                                        - single_quality["mrr_all_entities"], 4),
              "loadavg": distributed["loadavg_before"]})
        shutil.rmtree(dist_dir, ignore_errors=True)
    if args.skip_pbg:
        return

    pbg_dir = args.workdir / "pbg"
    shutil.rmtree(pbg_dir, ignore_errors=True)
    pbg_dir.mkdir()
    cfg = pbg_dir / "config.py"
    cfg.write_text(pbg.config_text(pbg_dir / "data", [pbg_dir / "train_p", pbg_dir / "test_p"], pbg_dir / "model",
                                   args.partitions, args.dim,
                                   **{**pbg.livejournal_options(args.epochs, workers=1), "num_machines": 2,
                                      "distributed_init_method": f"tcp://127.0.0.1:{free_port()}"}))
    run_measured(pbg.import_command(cfg, graph["train"], graph["test"]))
    trainers = run_group([[*pbg.train_command(cfg, f"edge_paths={pbg_dir / 'train_p'}"), "--rank", str(r)]
                          for r in range(2)])
    quality = pbg.evaluate(cfg, f"edge_paths={pbg_dir / 'test_p'}", "num_machines=1")
    emit({"bench": "distributed", "tool": "pbg", "setting": setting,
          "edges_per_sec": round(train_edges * args.epochs / trainers["seconds"], 1), "seconds": trainers["seconds"],
          "peak_mem_mb": trainers["peak_mem_mb"], "mrr_partition": quality["mrr"],
          "hits@10_partition": quality["hits@10"], "loadavg": trainers["loadavg_before"]})
    shutil.rmtree(pbg_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
