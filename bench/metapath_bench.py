"""metapath2vec against DeepWalk on a typed graph: DBLP (authors, papers, terms, venues; author research areas).

    python -m bench.metapath_bench [--metapaths author-paper-venue-paper-author ...] [--repeats 10]

DBLP four-area (`../shared/datasets/dblp-hgb`, MAGNN's graph: 4,057 authors, 14,328 papers, 7,723 terms,
20 venues, 119,783 edges; 4 area labels on the authors). Its licence forbids redistribution: the bench reads
it from ../shared (SHARDGRAPH_DATASETS) and writes its typed edge list to --workdir only.

- metapath2vec: the graph imported with its four entity types and three relations (0: author-paper,
  1: paper-term, 2: paper-venue), `configs/metapath2vec.toml` with each metapath given;
- DeepWalk: the same edges imported as one untyped graph, `configs/deepwalk.toml` (walks ignore types).

Both: d = 128, 10 walks of length 80 per start node, window 10, one epoch; authors classified by the
same code (`shardgraph eval-nodes`: one-vs-rest logistic regression, --train-fraction of the labelled
authors, Macro/Micro-F1 over --repeats splits). One JSON line per method and metapath.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

from bench.common import DATASETS, PYTHON, REPO, emit, last_json, machine_load, run_measured

DBLP = DATASETS / "dblp-hgb"


def typed_edges(workdir: Path) -> tuple[Path, Path]:
    """DBLP as `lhs, lhs_type, rel, rhs, rhs_type` (typed) and `lhs, rhs` (untyped) TSVs; node ids as in the
    source (the label file's ids). Not timed."""
    typed, untyped = workdir / "dblp_typed.tsv", workdir / "dblp_untyped.tsv"
    if typed.exists() and untyped.exists():
        return typed, untyped
    node_type = {}
    with gzip.open(DBLP / "nodes.tsv.gz", "rt") as f:
        for line in f:
            node, kind = line.split("\t")[:2]
            node_type[node] = kind
    with gzip.open(DBLP / "edges.tsv.gz", "rt") as f, open(typed, "w") as t, open(untyped, "w") as u:
        for line in f:
            src, dst, rel = line.split()
            t.write(f"{src}\t{node_type[src]}\t{rel}\t{dst}\t{node_type[dst]}\n")
            u.write(f"{src}\t{dst}\n")
    return typed, untyped


def run(name: str, config: str, edges: Path, columns: str, import_config: Path | None, labels: Path,
        entity_type: str | None, overrides: list[str], workdir: Path, args: argparse.Namespace) -> dict:
    dataset, run_dir = workdir / f"data_{name}", workdir / f"run_{name}"
    shutil.rmtree(dataset, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [PYTHON, "-m", "shardgraph", "import", str(edges), "--out", str(dataset), "--columns", columns, "--json"]
    if import_config is not None:
        command += ["--config", str(import_config)]
    run_measured(command)
    load = machine_load()
    trained = run_measured([PYTHON, "-m", "shardgraph", "train", str(REPO / "configs" / config), "--dataset",
                            str(dataset), "--out", str(run_dir), "--json", *[x for o in overrides for x in ("-p", o)]])
    result = last_json(trained["stdout"])
    scored = run_measured([PYTHON, "-m", "shardgraph", "eval-nodes", str(run_dir), "--labels", str(labels),
                           "--train-fraction", *map(str, args.train_fraction), "--repeats", str(args.repeats),
                           "--json", *(["--type", entity_type] if entity_type else [])])
    evaluation = last_json(scored["stdout"])
    stats = json.loads((run_dir / "walks" / "manifest.json").read_text())["walk_stats"]
    record = {"seconds": trained["seconds"], "train_seconds": result["train_s"], "peak_mem_mb": trained["peak_mem_mb"],
              "pairs": stats["pairs"], "walks": stats["walks"], "labelled": evaluation["labelled_nodes"],
              "loadavg": load}
    for r in evaluation["results"]:
        suffix = f"@{r['train_fraction']:g}"
        record |= {f"macro_f1{suffix}": round(r["macro_f1"], 4), f"macro_f1_std{suffix}": round(r["macro_f1_std"], 4),
                   f"micro_f1{suffix}": round(r["micro_f1"], 4), f"micro_f1_std{suffix}": round(r["micro_f1_std"], 4)}
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(dataset, ignore_errors=True)
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metapaths", nargs="+", default=["author-paper-venue-paper-author",
                                                        "author-paper-author"])
    ap.add_argument("--workdir", default="/tmp/metapath_bench")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--train-fraction", type=float, nargs="+", default=[0.1, 0.5])
    ap.add_argument("--keep", action="store_true", help="keep the datasets and runs")
    args = ap.parse_args()
    if not (DBLP / "edges.tsv.gz").exists():
        raise SystemExit(f"{DBLP} is missing: set SHARDGRAPH_DATASETS to the shared datasets directory")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    typed, untyped = typed_edges(workdir)
    labels = DBLP / "labels.tsv"
    base = {"bench": "metapath", "tool": "shardgraph", "graph": "dblp-hgb", "window": 10, "dim": 128,
            "walks_per_node": 10, "walk_length": 80}
    for metapath in args.metapaths:
        emit(base | {"setting": f"metapath2vec-{metapath}"} | run(
            "metapath2vec", "metapath2vec.toml", typed, "lhs,lhs_type,rel,rhs,rhs_type",
            REPO / "configs" / "metapath2vec.toml", labels, "author", [f'walks.metapaths=["{metapath}"]'],
            workdir, args))
    emit(base | {"setting": "deepwalk-untyped"} | run("deepwalk", "deepwalk.toml", untyped, "lhs,rhs", None, labels,
                                                      None, [], workdir, args))


if __name__ == "__main__":
    main()
