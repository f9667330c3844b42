"""Distributed training: two trainers over loopback, shardgraph (torchrun) vs PyTorch-BigGraph's
distributed mode, plus shardgraph's single-process run for the quality comparison.

    python bench/distributed_bench.py [--nodes 100000] [--edges 2000000] [--partitions 4] [--epochs 10]

Both tools train the same generated graph (1% held out), P=4, d=100, the large-graph setup,
two trainers with one worker each on this machine. edges_per_sec = train edges × epochs /
wall time of the whole training (both trainers, start-up included); peak_mem_mb = peak
summed PSS of all processes; mrr ranks every test edge against all entities (raw).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.common import (
    PEERS,
    PYTHON,
    REPO,
    TreeSampler,
    emit,
    generated_graph,
    last_json,
    pbg_config,
    pbg_python,
    run_measured,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_group(commands: list[list[str]], env: dict[str, str] | None = None) -> dict[str, float]:
    """Start processes together; wall time until all end, and peak PSS of all of them."""
    started = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **(env or {})}) for c in commands]
    samplers = [TreeSampler(p.pid).__enter__() for p in procs]
    outputs = [p.communicate() for p in procs]
    peak = 0.0
    for sampler in samplers:
        sampler.__exit__()
        peak += sampler.peak_pss_kb / 1024
    for p, (_, err) in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"failed: {err[-3000:]}")
    return {"seconds": round(time.perf_counter() - started, 2), "peak_mem_mb": round(peak, 1),
            "stdout": outputs[0][0]}


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
    common = ["-p", f"training.epochs={args.epochs}", "-p", f"model.dimension={args.dim}"]
    config = str(REPO / "configs" / "large_graph.toml")

    single_dir = args.workdir / "sg_single"
    shutil.rmtree(single_dir, ignore_errors=True)
    single = run_measured([PYTHON, "-m", "shardgraph", "train", config, "--dataset", str(dataset), "--out",
                           str(single_dir), "--json", "-p", "training.workers=2", *common])
    single_eval = last_json(run_measured([PYTHON, "-m", "shardgraph", "eval", str(single_dir), "--raw",
                                          "--json"])["stdout"])
    emit({"bench": "distributed", "tool": "shardgraph", "setting": setting.replace("2trainers", "1process"),
          "edges_per_sec": round(train_edges * args.epochs / single["seconds"], 1), "seconds": single["seconds"],
          "peak_mem_mb": single["peak_mem_mb"], "mrr": round(single_eval["mrr"], 4),
          "hits@10": round(single_eval["hits@10"], 4)})

    dist_dir = args.workdir / "sg_dist"
    shutil.rmtree(dist_dir, ignore_errors=True)
    torchrun = [PYTHON, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend",
                "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "-m", "shardgraph", "train", config,
                "--dataset", str(dataset), "--out", str(dist_dir), "--no-progress", "-p", "training.workers=1",
                *common]
    distributed = run_group([torchrun])
    dist_eval = last_json(run_measured([PYTHON, "-m", "shardgraph", "eval", str(dist_dir), "--raw",
                                        "--json"])["stdout"])
    emit({"bench": "distributed", "tool": "shardgraph", "setting": setting,
          "edges_per_sec": round(train_edges * args.epochs / distributed["seconds"], 1),
          "seconds": distributed["seconds"], "peak_mem_mb": distributed["peak_mem_mb"],
          "mrr": round(dist_eval["mrr"], 4), "hits@10": round(dist_eval["hits@10"], 4),
          "mrr_gap_vs_single": round(dist_eval["mrr"] - single_eval["mrr"], 4)})
    if args.skip_pbg:
        return

    pbg_dir = args.workdir / "pbg"
    shutil.rmtree(pbg_dir, ignore_errors=True)
    pbg_dir.mkdir()
    cfg = pbg_dir / "config.py"
    cfg.write_text(pbg_config(pbg_dir / "data", [pbg_dir / "train_p", pbg_dir / "test_p"], pbg_dir / "model",
                              args.partitions, args.dim, comparator="dot", loss_fn="softmax", num_epochs=args.epochs,
                              num_batch_negs=50, num_uniform_negs=50, batch_size=1000, lr=0.1, eval_fraction=0.0,
                              workers=1, num_machines=2, distributed_init_method=f"tcp://127.0.0.1:{free_port()}",
                              checkpoint_preservation_interval=None, verbose=0))
    python = str(pbg_python())
    run_measured([python, str(PEERS / "pbg" / "pbg_import_batched.py"), "--lhs-col=0", "--rel-col=1", "--rhs-col=2",
                  str(cfg), str(graph["train"]), str(graph["test"])])
    trainer = str(Path(python).parent / "torchbiggraph_train")
    pbg = run_group([[trainer, str(cfg), "--rank", str(r), "-p", f"edge_paths={pbg_dir / 'train_p'}"]
                     for r in range(2)])
    run_measured([python, str(PEERS / "pbg" / "pbg_common.py"), "eval", str(cfg), str(pbg_dir / "eval.json"),
                  "--all-negs", "-p", f"edge_paths={pbg_dir / 'test_p'}", "num_machines=1"],
                 cwd=PEERS / "pbg")
    metrics = json.loads((pbg_dir / "eval.json").read_text())
    emit({"bench": "distributed", "tool": "pbg", "setting": setting,
          "edges_per_sec": round(train_edges * args.epochs / pbg["seconds"], 1), "seconds": pbg["seconds"],
          "peak_mem_mb": pbg["peak_mem_mb"], "mrr": round(metrics["mrr"], 4), "hits@10": round(metrics["r10"], 4)})


if __name__ == "__main__":
    main()
