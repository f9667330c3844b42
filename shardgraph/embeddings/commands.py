"""`shardgraph export | index | neighbors | predict | score | embed-new`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shardgraph.commands import add_json, command, emit


def _ids_from(args: argparse.Namespace, single: str | None, batch: str | None) -> tuple[list[str], bool]:
    """Ids from a positional/option value, or one per line from a file (--*-file); (ids, single?)."""
    if batch is not None:
        path = Path(batch)
        from shardgraph.errors import InputError

        if not path.is_file():
            raise InputError("does not exist", path=path)
        ids = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
        if not ids:
            raise InputError("holds no ids", path=path)
        return ids, False
    assert single is not None
    return [single], True


def _table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _print_rankings(args: argparse.Namespace, queries: list[str], results: list[list[Any]], what: str) -> None:
    if args.json:
        for query, ranked in zip(queries, results, strict=True):
            print(json.dumps({"query": query, what: [p.to_dict() for p in ranked]}))
        return
    for query, ranked in zip(queries, results, strict=True):
        rows = [("rank", "id", "score")] + [(str(i + 1), p.id, f"{p.score:.4f}") for i, p in enumerate(ranked)]
        print(f"{what} of {query}:")
        print(_table(rows))


# ----------------------------------------------------------------------------- export


def _setup_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--format", choices=["tsv", "w2v", "npy", "parquet", "h5"], default="tsv")
    p.add_argument("--out", required=True, help="output file (npy also writes OUT with suffix .ids.txt)")
    p.add_argument("--type", dest="entity_type", help="entity type to export (required with several types)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--relations", action="store_true",
                   help="export the relation parameters instead (to .json, else npz)")
    p.add_argument("--no-progress", action="store_true")
    add_json(p)


@command("export", _setup_export)
def _export(args: argparse.Namespace) -> int:
    """Export embeddings (TSV, word2vec, npy, Parquet, HDF5) or relation parameters (JSON, npz)."""
    from shardgraph.embeddings.writers import export, export_relations

    if args.relations:
        result = export_relations(args.run, args.out)
        emit(args, result, f"exported {result['relations']} relations' parameters to {args.out}")
        return 0
    result = export(args.run, args.format, args.out, entity_type=args.entity_type, dtype=args.dtype,
                    progress=not (args.no_progress or args.json))
    emit(args, result, f"exported {result['rows']:,} x {result['dim']} embeddings ({args.format}, {args.dtype}) to "
                       f"{', '.join(result['files'])} in {result['seconds']:.1f} s")
    return 0


# ----------------------------------------------------------------------------- index


def _setup_index(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--out", required=True, help="index directory to create")
    p.add_argument("--kind", choices=["flat", "ivf", "ivf-sq8", "hnsw"], default="hnsw",
                   help="ivf-sq8: IVF over 8-bit quantised vectors, a quarter of ivf's memory")
    p.add_argument("--metric", choices=["cos", "dot", "l2"], default="cos")
    p.add_argument("--type", dest="entity_type")
    p.add_argument("--target-recall", type=float, default=0.95,
                   help="recall@10 against exact search the search setting (efSearch, nprobe) is tuned to reach")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    add_json(p)


@command("index", _setup_index)
def _index(args: argparse.Namespace) -> int:
    """Build a persistent nearest-neighbour index (faiss) of a run's embeddings; reports its recall@10."""
    from shardgraph.embeddings.index import build_index
    from shardgraph.embeddings.model import load

    result = build_index(load(args.run), args.out, kind=args.kind, metric=args.metric, entity_type=args.entity_type,
                         overwrite=args.overwrite, target_recall=args.target_recall,
                         progress=not (args.no_progress or args.json))
    setting = {"hnsw": f", efSearch {result.get('ef_search')}", "ivf": f", nprobe {result.get('nprobe')}",
               "ivf-sq8": f", nprobe {result.get('nprobe')}"}
    emit(args, result, f"{args.kind} index of {result['count']:,} {result['entity_type']} embeddings ({args.metric}) "
                       f"in {result['build_s']:.1f} s, recall@10 {result['recall@10']:.3f}"
                       f"{setting.get(args.kind, '')} -> {args.out}")
    return 0


# ----------------------------------------------------------------------------- neighbors / predict / score


def _setup_neighbors(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("id", nargs="?", help="entity id")
    p.add_argument("--ids-file", help="a file of ids, one per line (batch form)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--metric", choices=["cos", "dot", "l2"], default="cos")
    p.add_argument("--type", dest="entity_type")
    p.add_argument("--index", help="an index from `shardgraph index` (approximate, fast)")
    add_json(p)


@command("neighbors", _setup_neighbors)
def _neighbors(args: argparse.Namespace) -> int:
    """The k most similar entities of the same type (exact, or through an index)."""
    from shardgraph.embeddings.model import load
    from shardgraph.errors import QueryError

    if (args.id is None) == (args.ids_file is None):
        raise QueryError("give an id or --ids-file.")
    ids, _ = _ids_from(args, args.id, args.ids_file)
    results = load(args.run).neighbors(ids, k=args.k, metric=args.metric, entity_type=args.entity_type,
                                       index=args.index)
    _print_rankings(args, ids, results, "neighbors")
    return 0


def _setup_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    side = p.add_mutually_exclusive_group(required=True)
    side.add_argument("--lhs", help="predict the rhs of (LHS, relation, ?)")
    side.add_argument("--rhs", help="predict the lhs of (?, relation, RHS)")
    side.add_argument("--lhs-file", help="batch form: lhs ids, one per line")
    side.add_argument("--rhs-file", help="batch form: rhs ids, one per line")
    p.add_argument("--relation", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--include-known", action="store_true", help="also predict edges already in the dataset")
    add_json(p)


@command("predict", _setup_predict)
def _predict(args: argparse.Namespace) -> int:
    """Top-k link prediction: the best rhs for (lhs, relation, ?) or lhs for (?, relation, rhs)."""
    from shardgraph.embeddings.model import load

    model = load(args.run)
    if args.lhs is not None or args.lhs_file is not None:
        ids, _ = _ids_from(args, args.lhs, args.lhs_file)
        results = model.predict(lhs=ids, relation=args.relation, k=args.k, exclude_known=not args.include_known)
    else:
        ids, _ = _ids_from(args, args.rhs, args.rhs_file)
        results = model.predict(rhs=ids, relation=args.relation, k=args.k, exclude_known=not args.include_known)
    _print_rankings(args, ids, results, "predictions")
    return 0


def _setup_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--edges", required=True, help="edges to score (lhs rel rhs, or lhs rhs; TSV/CSV/Parquet)")
    p.add_argument("--out", help="write 'lhs rel rhs score' lines here (default: stdout)")
    p.add_argument("--columns", default="auto")
    add_json(p)


@command("score", _setup_score)
def _score(args: argparse.Namespace) -> int:
    """Score a file of edges with the trained model, streaming block by block."""
    from shardgraph.data.reader import EdgeFileReader
    from shardgraph.embeddings.model import load
    from shardgraph.utils.atomic import temp_sibling

    model = load(args.run)
    relations = model.relations
    out_path = Path(args.out) if args.out else None
    temp = temp_sibling(out_path) if out_path else None
    sink = open(temp, "w", encoding="utf-8") if temp else sys.stdout  # noqa: SIM115 - closed below
    total = 0
    try:
        for block in EdgeFileReader(args.edges, columns=args.columns):
            lhs, rhs = block.lhs.to_pylist(), block.rhs.to_pylist()
            rel = block.rel.to_pylist() if block.rel is not None else [relations[0]] * len(lhs)
            scores = model.score(lhs, rel, rhs)
            if args.json and sink is sys.stdout:
                for a, r, b, s in zip(lhs, rel, rhs, scores.tolist(), strict=True):
                    sink.write(json.dumps({"lhs": a, "rel": r, "rhs": b, "score": s}) + "\n")
            else:
                sink.write("".join(f"{a}\t{r}\t{b}\t{s:.6g}\n" for a, r, b, s in
                                   zip(lhs, rel, rhs, scores.tolist(), strict=True)))
            total += len(lhs)
        if temp is not None and out_path is not None:
            sink.close()
            import os

            os.replace(temp, out_path)
    except BaseException:
        if temp is not None:
            sink.close()
            temp.unlink(missing_ok=True)
        raise
    if out_path is not None:
        emit(args, {"edges": total, "out": str(out_path)}, f"scored {total:,} edges -> {out_path}")
    return 0


# ----------------------------------------------------------------------------- embed-new


def _setup_embed_new(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("edges", help="edges of the new entities to known ones (lhs rel rhs, or lhs rhs)")
    p.add_argument("--out", required=True,
                   help="a new run directory (the run plus the new entities), or a .npy/.tsv/.parquet/.h5 file")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--negatives", type=int, default=1000)
    p.add_argument("--lr", type=float)
    p.add_argument("--columns", default="auto")
    p.add_argument("--overwrite", action="store_true")
    add_json(p)


@command("embed-new", _setup_embed_new)
def _embed_new(args: argparse.Namespace) -> int:
    """Embed entities absent from training from their edges (the trained model stays frozen)."""
    from shardgraph.embeddings.foldin import fold_in, write_new_entities
    from shardgraph.embeddings.model import load

    model = load(args.run)
    new = fold_in(model, args.edges, epochs=args.epochs, negatives=args.negatives, lr=args.lr,
                  columns=args.columns)
    result = write_new_entities(model, new, args.out, overwrite=args.overwrite)
    counts = ", ".join(f"{n:,} {t}" for t, n in result["new_entities"].items())
    emit(args, result, f"embedded {counts} new entities -> {args.out}")
    return 0
