"""metapath2vec against DeepWalk on typed graphs with labels: DBLP and IMDB (MAGNN's versions).

    python -m bench.metapath_bench [--graph dblp-hgb|imdb-magnn] [--metapaths A-B-A ...] [--repeats 10]

- dblp-hgb (`../shared/datasets/dblp-hgb`: 4,057 authors, 14,328 papers, 7,723 terms, 20 venues, 119,783
  edges; 4 research areas on the authors; relations 0: author-paper, 1: paper-term, 2: paper-venue);
- imdb-magnn (`../shared/datasets/imdb-magnn`: 4,278 movies, 2,081 directors, 5,257 actors, 17,106 edges;
  3 genres on the movies; relations 0: movie-director, 1: movie-actor).

The datasets are read from ../shared (SHARDGRAPH_DATASETS; DBLP's licence forbids redistribution) and the
typed edge lists written to --workdir only.

- metapath2vec: the graph imported with its entity types and relations, `configs/metapath2vec.toml` with
  the graph's types and relations (written to --workdir) and each metapath given;
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

# graph -> (labelled type, relations (name, lhs type, rhs type), default metapaths)
GRAPHS: dict[str, tuple[str, list[tuple[str, str, str]], list[str]]] = {
    "dblp-hgb": ("author", [("0", "author", "paper"), ("1", "paper", "term"), ("2", "paper", "venue")],
                 ["author-paper-venue-paper-author", "author-paper-author"]),
    "imdb-magnn": ("movie", [("0", "movie", "director"), ("1", "movie", "actor")],
                   ["movie-director-movie", "movie-actor-movie"]),
}


def typed_config(graph: str, workdir: Path) -> Path:
    """configs/metapath2vec.toml with the graph's entity types and relations."""
    import tomllib

    from shardgraph.config import dump_config, load_config

    raw = tomllib.loads((REPO / "configs" / "metapath2vec.toml").read_text())
    _, relations, _ = GRAPHS[graph]
    raw["entities"] = {t: {} for rel in relations for t in rel[1:]}
    raw["relations"] = [{"name": name, "lhs": lhs, "rhs": rhs} for name, lhs, rhs in relations]
    path = workdir / f"metapath2vec_{graph}.toml"
    path.write_text(dump_config(load_config(None, base=raw)))
    return path


def typed_edges(graph: str, workdir: Path) -> tuple[Path, Path]:
    """The graph as `lhs, lhs_type, rel, rhs, rhs_type` (typed) and `lhs, rhs` (untyped) TSVs; node ids as in
    the source (the label file's ids). Not timed."""
    source = DATASETS / graph
    typed, untyped = workdir / f"{graph}_typed.tsv", workdir / f"{graph}_untyped.tsv"
    if typed.exists() and untyped.exists():
        return typed, untyped
    node_type = {}
    with gzip.open(source / "nodes.tsv.gz", "rt") as f:
        for line in f:
            node, kind = line.split("\t")[:2]
            node_type[node] = kind
    with gzip.open(source / "edges.tsv.gz", "rt") as f, open(typed, "w") as t, open(untyped, "w") as u:
        for line in f:
            src, dst, rel = line.split()
            t.write(f"{src}\t{node_type[src]}\t{rel}\t{dst}\t{node_type[dst]}\n")
            u.write(f"{src}\t{dst}\n")
    return typed, untyped


def run(name: str, config: Path, edges: Path, columns: str, import_config: Path | None, labels: Path,
        entity_type: str | None, overrides: list[str], workdir: Path, args: argparse.Namespace) -> dict:
    dataset, run_dir = workdir / f"data_{name}", workdir / f"run_{name}"
    shutil.rmtree(dataset, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [PYTHON, "-m", "shardgraph", "import", str(edges), "--out", str(dataset), "--columns", columns, "--json"]
    if import_config is not None:
        command += ["--config", str(import_config)]
    run_measured(command)
    load = machine_load()
    trained = run_measured([PYTHON, "-m", "shardgraph", "train", str(config), "--dataset",
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
    ap.add_argument("--graph", default="dblp-hgb", choices=list(GRAPHS))
    ap.add_argument("--metapaths", nargs="+", help="default: the graph's two usual ones, each alone and both; "
                    "'A-B-A,A-C-A' walks several in one run")
    ap.add_argument("--workdir", default="/tmp/metapath_bench")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--train-fraction", type=float, nargs="+", default=[0.1, 0.5])
    ap.add_argument("--keep", action="store_true", help="keep the datasets and runs")
    args = ap.parse_args()
    source = DATASETS / args.graph
    if not (source / "edges.tsv.gz").exists():
        raise SystemExit(f"{source} is missing: set SHARDGRAPH_DATASETS to the shared datasets directory")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    labelled, _, metapaths = GRAPHS[args.graph]
    typed, untyped = typed_edges(args.graph, workdir)
    config = typed_config(args.graph, workdir)
    labels = source / "labels.tsv"
    base = {"bench": "metapath", "tool": "shardgraph", "graph": args.graph, "window": 10, "dim": 128,
            "walks_per_node": 10, "walk_length": 80}
    for metapath in args.metapaths or [*metapaths, ",".join(metapaths)]:
        listed = ", ".join(f'"{m}"' for m in metapath.split(","))
        emit(base | {"setting": f"metapath2vec-{metapath}"} | run(
            "metapath2vec", config, typed, "lhs,lhs_type,rel,rhs,rhs_type", config, labels, labelled,
            [f"walks.metapaths=[{listed}]"], workdir, args))
    emit(base | {"setting": "deepwalk-untyped"} | run("deepwalk", REPO / "configs" / "deepwalk.toml", untyped,
                                                      "lhs,rhs", None, labels, None, [], workdir, args))


if __name__ == "__main__":
    main()
