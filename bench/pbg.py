"""The PyTorch-BigGraph peer, driven from the benches: import, train and evaluate, each measured here.

The peer is installed by `bash bench/peers/pbg.sh` into its own venv (bench.common.PBG_VENV). Its
three phases run as separate processes of that venv, each under the same sampler as shardgraph
(bench.common.run_measured): PBG's importer with a batched edge writer
(bench/peers/pbg/import_batched.py), PBG's own `torchbiggraph_train`, and PBG's evaluator
(bench/peers/pbg/evaluate.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import PBG_SCRIPTS, last_json, pbg_python, run_measured

SITE = PBG_SCRIPTS / "site"
"""PYTHONPATH entry that makes PBG's importer write small HDF5 chunks (see site/sitecustomize.py)."""


def config_text(entity_path: Path, edge_paths: list[Path], checkpoint_path: Path, partitions: int, dim: int,
                **options: object) -> str:
    """The text of a PyTorch-BigGraph config file (one entity type `node`, one relation `r0`)."""
    fields = {
        "entity_path": str(entity_path),
        "edge_paths": [str(p) for p in edge_paths],
        "checkpoint_path": str(checkpoint_path),
        "entities": {"node": {"num_partitions": partitions}},
        "relations": [{"name": "r0", "lhs": "node", "rhs": "node", "operator": "none"}],
        "dynamic_relations": False,
        "dimension": dim,
        "global_emb": False,
        **options,
    }
    body = ",\n        ".join(f"{key}={value!r}" for key, value in fields.items())
    return f"def get_torchbiggraph_config():\n    return dict(\n        {body},\n    )\n"


def livejournal_options(epochs: int, workers: int) -> dict[str, object]:
    """PBG's LiveJournal example setup, the one configs/large_graph.toml mirrors."""
    return {"comparator": "dot", "loss_fn": "softmax", "num_epochs": epochs, "num_batch_negs": 50,
            "num_uniform_negs": 50, "batch_size": 1000, "lr": 0.1, "eval_fraction": 0.0, "workers": workers,
            "checkpoint_preservation_interval": None, "verbose": 0}


def import_command(config: Path, *tsvs: Path) -> list[str]:
    return [str(pbg_python()), str(PBG_SCRIPTS / "import_batched.py"), "--lhs-col=0", "--rel-col=1",
            "--rhs-col=2", str(config), *map(str, tsvs)]


def train_command(config: Path, *params: str) -> list[str]:
    return [str(pbg_python().parent / "torchbiggraph_train"), str(config), *[x for p in params for x in ("-p", p)]]


def evaluate(config: Path, *params: str) -> dict[str, Any]:
    """PBG's ranking of each edge of the config's edge_paths against all entities of the true end's
    partition (all_negs; the positive itself is masked), raw. Returns mrr, hits@10, count, seconds."""
    measured = run_measured([str(pbg_python()), str(PBG_SCRIPTS / "evaluate.py"), str(config),
                             *[x for p in params for x in ("-p", p)]])
    metrics = last_json(measured["stdout"])
    return {"mrr": round(metrics["mrr"], 4), "hits@10": round(metrics["r10"], 4), "count": metrics["count"],
            "seconds": measured["seconds"]}


def train_and_evaluate(train: Path, test: Path, out: Path, partitions: int, epochs: int, dim: int, workers: int,
                       small_chunks: bool = False) -> dict[str, Any]:
    """Import train + test, train on train, rank test (PBG's all_negs protocol); one figure per phase.

    seconds / peak_mem_mb are those of the `torchbiggraph_train` process tree alone (its start-up
    and imports, worker spawn and checkpoint writes included); import and eval are measured
    apart (import_s, eval_s). small_chunks: see SITE.
    """
    out.mkdir(parents=True, exist_ok=True)
    config = out / "config.py"
    config.write_text(config_text(out / "data", [out / "train_p", out / "test_p"], out / "model", partitions, dim,
                                  **livejournal_options(epochs, workers)))
    imported = run_measured(import_command(config, train, test),
                            env={"PYTHONPATH": str(SITE)} if small_chunks else None)
    trained = run_measured(train_command(config, f"edge_paths={out / 'train_p'}"))
    evaluated = evaluate(config, f"edge_paths={out / 'test_p'}")
    with open(train, "rb") as f:
        train_edges = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    return {"edges_per_sec": round(train_edges * epochs / trained["seconds"], 1), "seconds": trained["seconds"],
            "peak_mem_mb": trained["peak_mem_mb"], "mrr_partition": evaluated["mrr"],
            "hits@10_partition": evaluated["hits@10"], "import_s": imported["seconds"],
            "import_peak_mem_mb": imported["peak_mem_mb"], "eval_s": evaluated["seconds"],
            "loadavg": trained["loadavg_before"]}
