"""GraphSAGE node classification, shardgraph vs PyTorch Geometric's SAGEConv, side by side.

    bench/peers/pyg_sage.sh                       # once: the peer's venv (torch 2.13.0 CPU + torch-geometric)
    python bench/sage_bench.py [--seeds 10] [--threads 1] [--settings cora-raw,citeseer-raw,...]

Settings (same public splits, same protocol: 2 layers, hidden 64, dropout --dropout before each
layer, Adam lr 0.01, weight decay 5e-4, early stopping on validation accuracy with patience 100,
best weights kept):
cora-raw, cora-hashed256 (signed hashing of the word ids into 256 columns), cora-raw-inductive
(test nodes and their edges unseen while training), citeseer-raw. The peer is
`bench/peers/pyg_sage_run.py` (full-batch SAGEConv) in the venv of bench/peers/pyg_sage.sh. Each tool
and setting runs in its own process; `peak_mem_mb` is the peak summed PSS of that process tree,
`seconds` the mean training time of one seed, `cpu_seconds_total` the CPU time (user + system) of
the whole process, start-up and data loading included (fairer than wall time on a shared machine).
One JSON line per tool and setting.

--dropout (default 0.9, given to both tools): chosen on Cora's (raw) validation split, shardgraph's
mean validation accuracy over 10 seeds at dropout 0.5 / 0.7 / 0.75 / 0.8 / 0.85 / 0.9 / 0.95:
0.803 / 0.810 / 0.812 / 0.816 / 0.818 / 0.820 / 0.808. The sparse bag-of-words inputs overfit the
140 training nodes at GraphSAGE's usual 0.5. `--dropout 0.5` gives the earlier protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DATASETS, REPO, emit, last_json, machine_load, run_measured

PEER_PYTHON = Path(os.environ.get("SAGE_VENV", REPO / ".peers" / "pyg-sage")) / "bin" / "python"
PEER_SCRIPT = REPO / "bench" / "peers" / "pyg_sage_run.py"
SETTINGS = {
    "cora-raw": ("cora", "raw", False),
    "cora-hashed256": ("cora", "hashed", False),
    "cora-raw-inductive": ("cora", "raw", True),
    "citeseer-raw": ("citeseer", "raw", False),
}


def worker(setting: str, seeds: int, threads: int, workdir: Path, extra: list[str]) -> dict[str, object]:
    """Import and train one setting with shardgraph, in this process; returns the JSON record."""
    import numpy as np

    from bench.sage_data import convert
    from shardgraph.config import load_config
    from shardgraph.data.nodes import import_graph
    from shardgraph.gnn.train import train_sage

    name, features, inductive = SETTINGS[setting]
    source = workdir / name
    info = convert(DATASETS / name, source)
    encoder = (f'encoder = "multi_hot"\nn_features = {info["features"]}' if features == "raw" else
               'encoder = "hash"\nn_features = 256\ntokenizer = "whitespace"\nprefix = false')
    config = workdir / f"{setting}.toml"
    config.write_text(f"""
[data]
dataset = "{workdir / setting}"
[nodes]
labels = "{source / 'labels.tsv'}"
[nodes.features.words]
{encoder}
[sage]
split_train = "{source / 'split_train.txt'}"
split_valid = "{source / 'split_val.txt'}"
split_test = "{source / 'split_test.txt'}"
threads = {threads}
checkpoint_seconds = 1e9
""")
    started = time.perf_counter()
    import_graph([source / "edges.tsv"], workdir / setting, nodes=[source / "nodes.csv"], config=config,
                 overwrite=True, progress=False)
    import_seconds = time.perf_counter() - started
    runs = [train_sage(load_config(config, [f"sage.seed={seed}", *extra]), workdir / f"{setting}-run", overwrite=True,
                       holdout_test=inductive) for seed in range(seeds)]
    test = [r.metrics["test"] for r in runs]

    def mean(key: str) -> float:
        return round(float(np.mean([t[key] for t in test])), 4)

    return {
        "accuracy": mean("accuracy"), "std": round(float(np.std([t["accuracy"] for t in test])), 4),
        "top2_accuracy": mean("top2_accuracy"), "macro_f1": mean("macro_f1"),
        "valid_accuracy": round(float(np.mean([r.metrics["valid"]["accuracy"] for r in runs])), 4),
        "seconds": round(float(np.mean([r.seconds for r in runs])), 3),
        "epochs_mean": float(np.mean([r.epochs for r in runs])),
        "per_seed_accuracy": [t["accuracy"] for t in test], "import_seconds": round(import_seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sage_bench"))
    parser.add_argument("--tools", default="shardgraph,pyg")
    parser.add_argument("--dropout", type=float, default=0.9, help="dropout of both tools (see above)")
    parser.add_argument("-p", "--param", action="append", default=[], help="config override for shardgraph")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.worker:
        print(json.dumps(worker(args.worker, args.seeds, args.threads, args.workdir,
                                [f"sage.dropout={args.dropout}", *args.param])))
        return
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    for setting in args.settings.split(","):
        name, features, inductive = SETTINGS[setting]
        for tool in args.tools.split(","):
            load = machine_load()
            if tool == "shardgraph":
                command = [sys.executable, __file__, "--worker", setting, "--seeds", str(args.seeds),
                           "--threads", str(args.threads), "--workdir", str(args.workdir),
                           "--dropout", str(args.dropout)]
                for p in args.param:
                    command += ["-p", p]
            else:
                if not PEER_PYTHON.exists():
                    raise SystemExit(f"the PyG peer is not installed: run bench/peers/pyg_sage.sh ({PEER_PYTHON})")
                command = [str(PEER_PYTHON), str(PEER_SCRIPT), "--data", str(DATASETS / name), "--seeds",
                           str(args.seeds), "--threads", str(args.threads), "--features", features,
                           "--dropout", str(args.dropout)]
                if features == "hashed":
                    command += ["--hash-dim", "256"]
                if inductive:
                    command.append("--inductive")
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            measured = run_measured(command, env=env)
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
            result = last_json(measured["stdout"])
            record = {"bench": "sage", "tool": tool, "setting": setting,
                      **{k: result[k] for k in ("accuracy", "std", "top2_accuracy", "macro_f1", "seconds")},
                      "peak_mem_mb": measured["peak_mem_mb"], "seeds": args.seeds, "threads": args.threads,
                      "dropout": args.dropout,
                      "wall_seconds": measured["seconds"], "cpu_seconds_total": round(cpu, 1),
                      "load_before": load, "load_after": machine_load()}
            if tool == "shardgraph" and args.param:
                record["params"] = args.param
            record["epochs_mean"] = result["epochs_mean"]
            emit(record)


if __name__ == "__main__":
    main()
