"""Seed scale on one small machine (issue 17): the 51M-node / 280M-edge two-type graph, end to end.

    python -m bench.seed_scale_bench [--scale 1.0] [--partitions 32] [--memory-limit-mb 4096]
                                     [--phases generate import train eval export index query neighbours-quality]
                                     [--workdir /tmp/sg-seed] [--reuse]

Phases, each one command run as a child process and measured by bench.common (wall seconds,
start-up included; peak summed PSS of its process tree, sampled every 0.1 s), each printing one
JSON line (`bench`, `tool`, `setting`, `phase`, `seconds`, `peak_mem_mb`, `disk_gb` = the size of
the workdir after the phase, and `edges_per_sec` where edges flow):

generate           bench/typed_graphs.py at --scale: 19M A + 32M B nodes, 280M A-B + 28M A-A edges at
                   1.0, 100k held-out A-B edges (1,000 at 0.01), Parquet parts.
import             `shardgraph import` with the graph's types and relations, P = --partitions for both.
train              one epoch, d = 128, bfloat16 storage, 2 workers, storage.memory_limit_mb = the limit,
                   and the largest partition buffer whose memory plan fits it (the plan is computed
                   here with shardgraph's own planner and printed, `plan`); `edges_per_sec` = train
                   edges / the process's wall time.
resume             (not in the default list) the same epoch in another run directory, checkpointing every
                   few buckets, killed with SIGKILL after a checkpoint, then `train --resume`: from the
                   run's metrics.jsonl and manifest, `redone_finished` = buckets finished in the
                   checkpoint that the resumed run trained again (must be 0).
eval               two lines: the test edges ranked against --eval-negatives (1000) sampled entities, raw
                   (`mrr`, the issue's "much better than random"; random gives about 7.5 / negatives),
                   and filtered against 1M × scale sampled candidates (`setting` ..._filtered_<N>) for a
                   seeded sample of --filtered-edges (10,000) of the test edges.
export             `shardgraph export --format parquet --dtype float16` of type A and of type B (one command).
index              `shardgraph index --kind ivf-sq8 --type A` (cosine; --index-kind ivf for float32 lists),
                   search tuned to recall@10 >= 0.95 against exact search.
query              `shardgraph neighbors --index` for --queries sampled A ids (`queries_per_sec`).
neighbours-quality from the query phase's answers and a streaming pass over the graph's A-B parts: for
                   each queried A node, the share of its top-10 neighbours (type A) that share a B
                   neighbour with it (2-hop), against the same share for 10 random A nodes.

Outputs are kept in --workdir/s<scale>_p<P>/ so that phases can be rerun one at a time; a phase
always recomputes its output, except with --reuse, where a phase whose output exists is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.parquet as pq

from bench.common import PYTHON, REPO, emit, last_json, machine_load, run_measured
from bench.typed_graphs import TypedGraphSpec
from shardgraph.utils.arrays import unique_sorted

PHASES = ("generate", "import", "train", "resume", "eval", "export", "index", "query", "neighbours-quality")
DEFAULT_PHASES = [p for p in PHASES if p != "resume"]
DIMENSION = 128
WORKERS = 2

TRAIN_CONFIG = """# the seed-scale bench's training config: configs/large_graph.toml's model, two types
[model]
dimension = {dim}
operator = "none"
comparator = "dot"
loss = "softmax"

[training]
epochs = 1
batch_size = 1000
num_batch_negs = 50
num_uniform_negs = 50
lr = 0.1
bucket_order = "beta"
sampling_correction = true
workers = {workers}
# one complete checkpoint kept: with the default 2, the old, the kept and the one being written
# (13 GB of bfloat16 tables each) would exceed the 40 GB disk budget
keep_checkpoints = 1

[storage]
storage_dtype = "bfloat16"
memory_limit_mb = {limit}
buffer_partitions = {buffer}

[eval]
negatives = 0
"""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = args.workdir / f"s{args.scale:g}_p{args.partitions}"
        self.graph = self.root / "graph"
        self.dataset = self.root / "dataset"
        self.run = self.root / "run"
        self.resume_run = self.root / "run_resume"
        self.export = self.root / "export"
        self.index = self.root / "index_A"
        self.answers = self.root / "neighbours.jsonl"
        self.setting = f"s{args.scale:g}_P{args.partitions}_d{DIMENSION}_bf16_mem{args.memory_limit_mb}_w{WORKERS}"

    # ------------------------------------------------------------------ helpers
    def disk_gb(self) -> float:
        total = 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
                except OSError:
                    continue
        return round(total / 1e9, 3)

    def line(self, phase: str, measured: dict[str, Any], **extra: Any) -> None:
        emit({"bench": "seed_scale", "tool": "shardgraph", "setting": extra.pop("setting", self.setting),
              "phase": phase, "seconds": measured["seconds"], **extra, "peak_mem_mb": measured["peak_mem_mb"],
              "disk_gb": self.disk_gb(), "loadavg": measured["loadavg_before"]})

    def shardgraph(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "shardgraph", *args]

    def need(self, path: Path, phase: str) -> None:
        if not path.exists():
            raise SystemExit(f"{path} is missing: run the {phase} phase first (--phases {phase} ...)")

    def train_edges(self) -> int:
        manifest = json.loads((self.dataset / "manifest.json").read_text())
        return int(manifest["splits"]["train"]["edges"])

    # ------------------------------------------------------------------ phases
    def generate(self) -> None:
        spec = TypedGraphSpec.at_scale(self.args.scale, self.args.seed)
        shutil.rmtree(self.graph, ignore_errors=True)
        result = run_measured([PYTHON, "-m", "bench.typed_graphs", "--scale", str(self.args.scale), "--seed",
                               str(self.args.seed), "--out", str(self.graph)], cwd=REPO)
        summary = last_json(result["stdout"])
        edges = sum(summary["train_edges"].values()) + summary["test_edges"]
        self.line("generate", result, edges_per_sec=round(edges / result["seconds"], 1),
                  nodes={"A": spec.a_nodes, "B": spec.b_nodes}, edges=summary["train_edges"],
                  test_edges=summary["test_edges"], communities=summary["communities"],
                  max_degree=summary["max_degree"])

    def import_(self) -> None:
        self.need(self.graph / "summary.json", "generate")
        shutil.rmtree(self.dataset, ignore_errors=True)
        result = run_measured(self.shardgraph("import", str(self.graph / "train"), "--test", str(self.graph / "test"),
                                              "--config", str(self.graph / "config.toml"), "--partitions",
                                              str(self.args.partitions), "--out", str(self.dataset), "--json"))
        summary = last_json(result["stdout"])
        edges = sum(summary["edges"].values())
        self.line("import", result, edges_per_sec=round(edges / result["seconds"], 1), edges=summary["edges"],
                  entities=summary["entities"])

    def _plan(self) -> tuple[int, dict[str, Any]]:
        """The largest buffer (partitions in memory per type, >= 2) whose planned memory fits the limit."""
        from shardgraph.config import load_config
        from shardgraph.data.dataset import Dataset
        from shardgraph.model.model import Model
        from shardgraph.training.memory import plan_memory

        dataset = Dataset(self.dataset)
        best: tuple[int, Any] | None = None
        for slots in range(self.args.partitions, 1, -1):
            config = load_config(self.write_config(slots), [f"data.dataset={self.dataset}"])
            plan = plan_memory(config, Model(config, dataset), slots, WORKERS)
            if plan.total_mb <= self.args.memory_limit_mb or slots == 2:
                best = (0 if slots == self.args.partitions else slots, plan)
                break
        assert best is not None
        buffer, plan = best
        return buffer, {"buffer_partitions": buffer or self.args.partitions, "planned_mb": round(plan.total_mb, 1),
                        "embeddings_mb": round(plan.embeddings_mb, 1), "adagrad_mb": round(plan.optimizer_mb, 1),
                        "relations_mb": round(plan.relations_mb, 2), "workers_mb": round(plan.workers_mb, 1),
                        "runtime_mb": round(plan.runtime_mb, 1)}

    def write_config(self, buffer: int) -> Path:
        graph_config = (self.graph / "config.toml").read_text() if (self.graph / "config.toml").exists() else \
            (self.dataset.parent / "graph" / "config.toml").read_text()
        path = self.root / "train.toml"
        path.write_text(graph_config + TRAIN_CONFIG.format(dim=DIMENSION, workers=WORKERS, buffer=buffer,
                                                           limit=self.args.memory_limit_mb))
        return path

    def train(self) -> None:
        self.need(self.dataset / "manifest.json", "import")
        buffer, plan = self._plan()
        config = self.write_config(buffer)
        shutil.rmtree(self.run, ignore_errors=True)
        result = run_measured(self.shardgraph("train", str(config), "--dataset", str(self.dataset), "--out",
                                              str(self.run), "--json", "--no-progress"))
        summary = last_json(result["stdout"])
        records = [json.loads(x) for x in (self.run / "metrics.jsonl").read_text().splitlines()]
        self.line("train", result, edges_per_sec=round(summary["edges"] / result["seconds"], 1),
                  loop_edges_per_sec=summary["edges_per_sec"], edges=summary["edges"],
                  outside_buckets_s=_outside_buckets(result, [r for r in records if r.get("event") == "bucket"]),
                  plan=plan)

    def resume(self) -> None:
        """Kill -9 a training run after a mid-epoch checkpoint; resume; check no finished bucket is redone."""
        self.need(self.dataset / "manifest.json", "import")
        buffer, _ = self._plan()
        config = self.write_config(buffer)
        buckets = self.args.partitions ** 2
        every = max(1, buckets // 8)
        overrides = ["-p", f"training.checkpoint_every_buckets={every}"]
        run = self.resume_run
        shutil.rmtree(run, ignore_errors=True)
        started = time.perf_counter()
        proc = subprocess.Popen(self.shardgraph("train", str(config), "--dataset", str(self.dataset), "--out",
                                                str(run), "--no-progress", *overrides),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        manifest_path = run / "checkpoint" / "manifest.json"
        killed_at: dict[str, Any] | None = None
        killed_after = 0.0
        children: list[psutil.Process] = []
        while proc.poll() is None:
            time.sleep(0.2)
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                continue
            if manifest.get("epoch") == 0 and int(manifest.get("buckets_done", 0)) >= buckets // 3:
                children = psutil.Process(proc.pid).children(recursive=True)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_after = time.perf_counter() - started
                killed_at = manifest
                break
        if killed_at is None:
            raise SystemExit("resume: the run ended before a mid-epoch checkpoint; nothing was killed")
        _, alive = psutil.wait_procs(children, timeout=30)
        orphans = len(alive)
        for child in alive:  # our own workers, left behind by the kill
            child.kill()
        before = (run / "metrics.jsonl").read_text().splitlines()
        trained_before = [json.loads(x) for x in before if json.loads(x).get("event") == "bucket"]
        # the manifest now on disk is the last complete checkpoint (maybe newer than the one seen)
        checkpoint = json.loads(manifest_path.read_text())
        done = int(checkpoint["buckets_done"])
        result = run_measured(self.shardgraph("train", str(config), "--dataset", str(self.dataset), "--out",
                                              str(run), "--no-progress", "--resume", "--json", *overrides))
        after = (run / "metrics.jsonl").read_text().splitlines()[len(before):]
        resumed = [json.loads(x) for x in after if json.loads(x).get("event") == "bucket"]
        finished = {(b["lhs"], b["rhs"]) for b in trained_before[:done]}
        redone = [b for b in resumed if (b["lhs"], b["rhs"]) in finished]
        ok = not redone and len(resumed) == buckets - done and all(
            b["index"] == done + i for i, b in enumerate(resumed))
        self.line("resume", result, edges_per_sec=round(last_json(result["stdout"])["edges"] / result["seconds"], 1),
                  killed_after_s=round(killed_after, 1), outside_buckets_s=_outside_buckets(result, resumed),
                  buckets=buckets, checkpoint_every=every, trained_before_kill=len(trained_before),
                  checkpointed=done, resumed_buckets=len(resumed), redone_finished=len(redone),
                  redone_unfinished=len(trained_before) - done, orphan_workers=orphans, ok=ok)
        shutil.rmtree(run, ignore_errors=True)
        if not ok:
            raise SystemExit("resume: finished buckets were trained again (see the line above)")

    def eval(self) -> None:
        self.need(self.run / "checkpoint" / "manifest.json", "train")
        candidates = max(1000, round(1_000_000 * self.args.scale))
        for negatives, filtered, setting, limit in (
                (self.args.eval_negatives, False, f"{self.setting}_raw_{self.args.eval_negatives}neg", 0),
                (candidates, True, f"{self.setting}_filtered_{candidates}neg", self.args.filtered_edges)):
            result = run_measured(self.shardgraph("eval", str(self.run), "--split", "test", "--negatives",
                                                  str(negatives), "--filtered" if filtered else "--raw", "--json",
                                                  "--max-edges", str(limit)))
            metrics = last_json(result["stdout"])
            ranked = 2 * metrics["edges"]
            self.line("eval", result, setting=setting, edges_per_sec=round(ranked / result["seconds"], 1),
                      edges=metrics["edges"], negatives=negatives, filtered=filtered, mrr=round(metrics["mrr"], 4),
                      **{"hits@10": round(metrics["hits@10"], 4)}, auc=round(metrics["auc"], 4),
                      random_mrr=round(_random_mrr(negatives), 4))

    def export_(self) -> None:
        self.need(self.run / "checkpoint" / "manifest.json", "train")
        shutil.rmtree(self.export, ignore_errors=True)
        self.export.mkdir(parents=True)
        commands = [" ".join(self.shardgraph("export", str(self.run), "--format", "parquet", "--type", t, "--out",
                                             str(self.export / f"{t}.parquet"), "--dtype", self.args.export_dtype,
                                             "--json"))
                    for t in ("A", "B")]
        result = run_measured(["sh", "-c", " && ".join(commands)])
        rows = sum(json.loads(x)["rows"] for x in result["stdout"].splitlines() if x.startswith("{"))
        self.line("export", result, dtype=self.args.export_dtype, rows=rows,
                  rows_per_sec=round(rows / result["seconds"], 1),
                  parquet_gb=round(sum(p.stat().st_size for p in self.export.glob("*")) / 1e9, 3))

    def index_(self) -> None:
        self.need(self.run / "checkpoint" / "manifest.json", "train")
        shutil.rmtree(self.index, ignore_errors=True)
        result = run_measured(self.shardgraph("index", str(self.run), "--out", str(self.index), "--kind",
                                              self.args.index_kind, "--type", "A", "--metric", "cos", "--json"))
        meta = last_json(result["stdout"])
        self.line("index", result, kind=self.args.index_kind, count=meta["count"], nlist=meta.get("nlist"),
                  nprobe=meta.get("nprobe"),
                  **{"recall@10": meta["recall@10"]}, build_s=meta["build_s"], tune_s=meta.get("tune_s"))

    def query(self) -> None:
        self.need(self.index / "meta.json", "index")
        count = json.loads((self.index / "meta.json").read_text())["count"]
        from shardgraph.data.dataset import Dataset

        dataset = Dataset(self.dataset)
        rng = np.random.default_rng(self.args.seed + 17)
        partitions = dataset.entity_types["A"].partitions
        ids: list[str] = []
        for p in range(partitions):  # the same number of sampled ids from every partition
            names = dataset.entity_names("A", p)
            take = rng.choice(len(names), size=min(len(names), -(-self.args.queries // partitions)), replace=False)
            ids.extend(names[i] for i in take.tolist())
        ids = ids[: self.args.queries]
        ids_file = self.root / "query_ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        result = run_measured(self.shardgraph("neighbors", str(self.run), "--ids-file", str(ids_file), "--type", "A",
                                              "--index", str(self.index), "-k", "10", "--json"))
        self.answers.write_text(result["stdout"])
        self.line("query", result, queries=len(ids), indexed=count,
                  queries_per_sec=round(len(ids) / result["seconds"], 1))

    def neighbours_quality(self) -> None:
        self.need(self.answers, "query")
        started = time.perf_counter()
        answers = [json.loads(x) for x in self.answers.read_text().splitlines() if x.startswith("{")]
        queried = np.array([int(a["query"]) for a in answers], dtype=np.int64)
        found = [np.array([int(n["id"]) for n in a["neighbors"]], dtype=np.int64) for a in answers]
        a_nodes = json.loads((self.graph / "summary.json").read_text())["a_nodes"]
        rng = np.random.default_rng(self.args.seed + 29)
        random_pick = [rng.integers(0, a_nodes, 10) for _ in answers]
        two_hop = _two_hop(self.graph / "train", queried)
        empty = np.zeros(0, np.int64)
        share = [_share_in(f, two_hop.get(int(q), empty)) for q, f in zip(queried.tolist(), found, strict=True)]
        baseline = [_share_in(r, two_hop.get(int(q), empty))
                    for q, r in zip(queried.tolist(), random_pick, strict=True)]
        seconds = round(time.perf_counter() - started, 2)
        self.line("neighbours-quality", {"seconds": seconds, "peak_mem_mb": None, "loadavg_before": machine_load()},
                  queries=len(answers), two_hop_share_top10=round(float(np.mean(share)), 4),
                  two_hop_share_random10=round(float(np.mean(baseline)), 4),
                  mean_two_hop_size=round(float(np.mean([len(v) for v in two_hop.values()])), 1))


def _outside_buckets(result: dict[str, Any], buckets: list[dict[str, Any]]) -> float:
    """Seconds of a training process not spent inside buckets: start-up, checkpoint loads and writes."""
    return round(result["seconds"] - sum(float(b["seconds"]) for b in buckets), 2)


def _random_mrr(negatives: int) -> float:
    """Expected MRR of a random scorer ranking the true end among `negatives` others: H(n + 1) / (n + 1)."""
    n = negatives + 1
    return float(np.sum(1.0 / np.arange(1, n + 1)) / n)


def _ab_edges(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The (A, B) ends of the A-B edges of one Parquet part."""
    table = pq.read_table(path, columns=["lhs", "rel", "rhs"])
    ab = table.column("rel").to_numpy(zero_copy_only=False) == "ab"
    return table.column("lhs").to_numpy()[ab], table.column("rhs").to_numpy()[ab]


def _share_in(values: np.ndarray, sorted_set: np.ndarray) -> float:
    """The share of `values` found in a sorted array of distinct ids, by binary search (np.isin sorts or
    hashes the whole set again for every query: minutes for 1,000 queries into two-hop sets of millions)."""
    if not len(values) or not len(sorted_set):
        return 0.0
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return float(np.mean(sorted_set[at] == values))


def _two_hop(parts: Path, queried: np.ndarray) -> dict[int, np.ndarray]:
    """For each queried A node, the other A nodes that share a B neighbour with it (train A-B edges),
    in two streaming passes over the Parquet parts: memory O(queried nodes' neighbourhoods)."""
    files = sorted(parts.glob("*.parquet"))
    wanted = np.unique(queried)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for path in files:  # pass 1: the B neighbours of the queried A nodes
        lhs, rhs = _ab_edges(path)
        hit = np.isin(lhs, wanted)
        pairs.append((lhs[hit], rhs[hit]))
    query_a = np.concatenate([p[0] for p in pairs])
    query_b = np.concatenate([p[1] for p in pairs])
    b_set = np.unique(query_b)
    reverse: list[tuple[np.ndarray, np.ndarray]] = []
    for path in files:  # pass 2: every A node of those B nodes
        lhs, rhs = _ab_edges(path)
        hit = np.isin(rhs, b_set)
        reverse.append((rhs[hit], lhs[hit]))
    rb = np.concatenate([r[0] for r in reverse])
    ra = np.concatenate([r[1] for r in reverse])
    order = np.argsort(rb, kind="stable")
    rb, ra = rb[order], ra[order]
    out: dict[int, np.ndarray] = {}
    by_query = np.argsort(query_a, kind="stable")
    query_a, query_b = query_a[by_query], query_b[by_query]
    bounds = np.searchsorted(query_a, wanted, side="left"), np.searchsorted(query_a, wanted, side="right")
    for node, lo, hi in zip(wanted.tolist(), bounds[0].tolist(), bounds[1].tolist(), strict=True):
        bs = query_b[lo:hi]
        starts, stops = np.searchsorted(rb, bs, side="left"), np.searchsorted(rb, bs, side="right")
        reached = np.concatenate([ra[s:e] for s, e in zip(starts.tolist(), stops.tolist(), strict=True)] or
                                 [np.zeros(0, np.int64)])
        reached = unique_sorted(reached)
        out[node] = reached[reached != node]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's graph (0.01: 190k/320k/2.8M)")
    ap.add_argument("--partitions", type=int, default=32)
    ap.add_argument("--memory-limit-mb", type=int, default=4096, help="storage.memory_limit_mb of the training run")
    ap.add_argument("--phases", nargs="+", default=DEFAULT_PHASES, choices=PHASES)
    ap.add_argument("--reuse", action="store_true", help="skip a phase whose output already exists")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-negatives", type=int, default=1000, help="sampled negatives of the raw eval line")
    ap.add_argument("--filtered-edges", type=int, default=10_000,
                    help="test edges of the filtered line, a seeded sample (0: all; at S = 1 all 100k against 1M "
                         "candidates are 5e13 multiply-adds, most of an hour on 2 cores)")
    ap.add_argument("--queries", type=int, default=1000, help="A ids queried (and scored for neighbours-quality)")
    ap.add_argument("--export-dtype", choices=["float32", "float16"], default="float16",
                    help="float16 halves the Parquet files (51M x 128: 13 GB instead of 26 GB)")
    ap.add_argument("--index-kind", choices=["ivf", "ivf-sq8"], default="ivf-sq8",
                    help="ivf-sq8 holds 8-bit vectors: 2.4 GB for 19M A nodes instead of 9.7 GB")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sg-seed"))
    args = ap.parse_args()
    bench = Bench(args)
    bench.root.mkdir(parents=True, exist_ok=True)
    outputs = {"generate": bench.graph / "summary.json", "import": bench.dataset / "manifest.json",
               "train": bench.run / "checkpoint" / "manifest.json", "export": bench.export / "B.parquet",
               "index": bench.index / "meta.json", "query": bench.answers}
    steps = {"generate": bench.generate, "import": bench.import_, "train": bench.train, "resume": bench.resume,
             "eval": bench.eval, "export": bench.export_, "index": bench.index_, "query": bench.query,
             "neighbours-quality": bench.neighbours_quality}
    for phase in PHASES:
        if phase not in args.phases:
            continue
        if args.reuse and phase in outputs and outputs[phase].exists():
            print(f"seed_scale_bench: {phase} reused ({outputs[phase]})", file=sys.stderr)
            continue
        steps[phase]()


if __name__ == "__main__":
    main()
