"""Filtered evaluation out of core: memory and time on a large graph, and exactness on FB15k-237.

    python -m bench.eval_bench [--parts fb15k scale] [--nodes 4000000] [--edges 40000000]
                               [--test-edges 100000] [--eval-edges 0] [--partitions 16] [--buffer 4] [--dim 128]

fb15k: imports FB15k-237 (shipped in data/), trains the shipped config for --fb15k-epochs epochs,
       then ranks the test split filtered, (a) with `shardgraph.evaluate` (known edges from the
       sorted per-partition files, memory-mapped) and (b) with an in-memory reference written
       here: every (query, relation) scored against all entities with one matrix product, the
       known edges of train/valid/test masked from a Python dict of sets. Prints both and whether
       MRR, MR and Hits@k agree exactly. Timed: each evaluation alone (not import or training).
scale: generates (cached in --workdir) the power-law graph with --test-edges held out, imports it
       with P = --partitions, trains one epoch with a buffer of --buffer partitions (configs/
       large_graph.toml, d = --dim), then runs `shardgraph eval RUN --split test --json` (filtered,
       every entity a candidate; with --eval-edges N a seeded sample of N test edges) as its own
       process. Timed and measured: that eval process alone, start-up, opening and verifying the
       checkpoint and building the known-edge index included; memory is the peak of its summed PSS
       (target <= 1.2 GB, as the buffered training).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import PYTHON, REPO, emit, generated_graph, last_json, machine_load, run_measured


def reference_filtered_metrics(run_path: Path) -> dict[str, float]:
    """Filtered MRR, MR and Hits@k of the test split, computed in memory with the run's model."""
    from shardgraph.storage.run import TrainedRun

    run = TrainedRun(run_path)
    dataset, model, tables = run.dataset, run.model, run.relation_tables
    assert len(model.entity_types) == 1, "the reference handles one entity type"
    spec = next(iter(model.entity_types.values()))
    entities = torch.cat([run.embeddings(spec.name, p) for p in range(spec.partitions)])
    known: dict[tuple[str, int, int], set[int]] = collections.defaultdict(set)
    for split in ("train", "valid", "test"):
        for lhs, rel, rhs in dataset.global_edges(split).tolist():
            known[("rhs", lhs, rel)].add(rhs)
            known[("lhs", rhs, rel)].add(lhs)
    test = dataset.global_edges("test")
    ranks = []
    with torch.no_grad():
        for predict, known_col, target_col in (("rhs", 0, 2), ("lhs", 2, 0)):
            for rel in np.unique(test[:, 1]):
                rows = test[test[:, 1] == rel]
                direction = model.directions(model.relations[int(rel)])[0 if predict == "rhs" else 1]
                query = model.query(direction, entities[rows[:, known_col]], tables,
                                    torch.full((len(rows),), int(rel)))
                candidates = model.candidates(direction, entities, tables, int(rel))
                scores = model.comparator.all_pairs(query.unsqueeze(0), candidates.unsqueeze(0))[0].numpy()
                for i, (k, t) in enumerate(zip(rows[:, known_col], rows[:, target_col], strict=True)):
                    row = scores[i]
                    true = row[t]
                    mask = np.ones(len(row), dtype=bool)
                    mask[list(known[(predict, int(k), int(rel))])] = False
                    mask[t] = False
                    ranks.append(1 + (row[mask] > true).sum() + (row[mask] == true).sum() / 2)
    ranks_array = np.array(ranks, dtype=np.float64)
    return {"mrr": float((1 / ranks_array).mean()), "mr": float(ranks_array.mean()),
            **{f"hits@{k}": float((ranks_array <= k).mean()) for k in (1, 3, 10)}}


def part_fb15k(args: argparse.Namespace) -> None:
    from shardgraph.eval.evaluate import evaluate

    data = REPO / "data" / "fb15k-237"
    dataset, run = args.workdir / "fb15k237_data", args.workdir / "fb15k237_run"
    if not (dataset / "manifest.json").exists():
        run_measured([PYTHON, "-m", "shardgraph", "import", str(data / "train.txt.gz"), "--valid",
                      str(data / "valid.txt.gz"), "--test", str(data / "test.txt.gz"), "--out", str(dataset)])
    shutil.rmtree(run, ignore_errors=True)
    run_measured([PYTHON, "-m", "shardgraph", "train", str(REPO / "configs" / "fb15k237.toml"), "--dataset",
                  str(dataset), "--out", str(run), "-p", f"training.epochs={args.fb15k_epochs}",
                  "-p", "training.eval_every=0", "--no-progress"])
    shutil.rmtree(dataset / "known", ignore_errors=True)  # time the index build too
    started = time.perf_counter()
    ours = evaluate(run, split="test", filtered=True)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    reference = reference_filtered_metrics(run)
    reference_seconds = time.perf_counter() - started
    keys = ("mrr", "mr", "hits@1", "hits@3", "hits@10")
    emit({"bench": "eval", "tool": "shardgraph", "setting": "fb15k237-filtered-out-of-core",
          **{k: ours[k] for k in keys}, "seconds": round(ours_seconds, 2), "load": machine_load()})
    emit({"bench": "eval", "tool": "in-memory-reference", "setting": "fb15k237-filtered",
          **{k: reference[k] for k in keys}, "seconds": round(reference_seconds, 2)})
    emit({"bench": "eval", "setting": "fb15k237-filtered-agreement",
          "max_abs_difference": max(abs(ours[k] - reference[k]) for k in keys)})


def part_scale(args: argparse.Namespace) -> None:
    holdout = args.test_edges / args.edges
    graph = generated_graph(args.workdir, args.nodes, args.edges, holdout=holdout)
    setting = f"{args.nodes}n_{args.edges}e_d{args.dim}_P{args.partitions}"
    dataset = args.workdir / f"eval_data_p{args.partitions}"
    if not (dataset / "manifest.json").exists():
        run_measured([PYTHON, "-m", "shardgraph", "import", str(graph["train"]), "--test", str(graph["test"]),
                      "--out", str(dataset), "--partitions", str(args.partitions), "--json"])
    run = args.workdir / f"eval_run_p{args.partitions}"
    if not (run / "checkpoint" / "manifest.json").exists():
        shutil.rmtree(run, ignore_errors=True)
        trained = run_measured([PYTHON, "-m", "shardgraph", "train", str(REPO / "configs" / "large_graph.toml"),
                                "--dataset", str(dataset), "--out", str(run), "--json", "--no-progress",
                                "-p", "training.epochs=1", "-p", f"model.dimension={args.dim}",
                                "-p", f"storage.buffer_partitions={args.buffer}", "-p", "training.bucket_order=beta"])
        emit({"bench": "eval", "tool": "shardgraph", "setting": f"{setting}_train_buffer{args.buffer}",
              "seconds": trained["seconds"], "peak_mem_mb": trained["peak_mem_mb"]})
    shutil.rmtree(dataset / "known", ignore_errors=True)  # the index build is part of the measure
    load = machine_load()
    sample = ["--max-edges", str(args.eval_edges)] if args.eval_edges else []
    result = run_measured([PYTHON, "-m", "shardgraph", "eval", str(run), "--split", "test", "--filtered", "--json",
                           *sample])
    metrics = last_json(result["stdout"])
    ranked = f"_sample{args.eval_edges}" if args.eval_edges else ""
    emit({"bench": "eval", "tool": "shardgraph", "setting": f"{setting}_test{args.test_edges}{ranked}_filtered_all",
          "edges": metrics["edges"], "mrr": metrics["mrr"], "hits@10": metrics["hits@10"],
          "seconds": result["seconds"], "peak_mem_mb": result["peak_mem_mb"], "load": load})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["fb15k", "scale"], choices=["fb15k", "scale"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/shardgraph-bench"))
    parser.add_argument("--fb15k-epochs", type=int, default=4)
    parser.add_argument("--nodes", type=int, default=4_000_000)
    parser.add_argument("--edges", type=int, default=40_000_000)
    parser.add_argument("--test-edges", type=int, default=100_000)
    parser.add_argument("--eval-edges", type=int, default=0,
                        help="scale: rank a seeded sample of this many of the test edges (0: all of them)")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--buffer", type=int, default=4)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if "fb15k" in args.parts:
        part_fb15k(args)
    if "scale" in args.parts:
        part_scale(args)


if __name__ == "__main__":
    main()
