"""The `shardgraph` command. Each subcommand parses its arguments, loads the config and
calls one library function; stdout gets a human summary, or one JSON line with --json."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from shardgraph import __version__
from shardgraph.commands import COMMANDS, add_config_args, add_json, command, emit, load_args_config
from shardgraph.errors import ShardgraphError

log = logging.getLogger("shardgraph")

# ----------------------------------------------------------------------------- config


def _setup_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["defaults", "show", "check"],
                   help="defaults: print the commented default config; show: the resolved config of --config "
                        "and -p; check: validate them")
    add_config_args(p)


@command("config", _setup_config)
def _config(args: argparse.Namespace) -> int:
    from shardgraph.config import default_config, dump_config

    if args.action == "defaults":
        sys.stdout.write(dump_config(default_config(), commented=True))
        return 0
    config = load_args_config(args)
    if args.action == "show":
        sys.stdout.write(dump_config(config, commented=False))
    else:
        print(f"{args.config or 'defaults'}: ok")
    return 0


# ----------------------------------------------------------------------------- import


def _setup_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("edges", nargs="+", help="training edge files: delimited text (plain, gz, bz2, xz, zstd), Matrix "
                   "Market .mtx, Parquet files, directories or globs; local paths or s3:// gs:// hdfs:// URIs")
    p.add_argument("--out", required=True, help="dataset directory to create")
    p.add_argument("--valid", action="append", default=[], metavar="FILE", help="validation edges (repeatable)")
    p.add_argument("--test", action="append", default=[], metavar="FILE", help="test edges (repeatable)")
    p.add_argument("--format", choices=["auto", "text", "tsv", "csv", "parquet"],
                   help="file format (default: Parquet by suffix or for a directory, else text)")
    p.add_argument("--columns", help="column roles, e.g. lhs,rel,rhs or lhs,rhs,weight ('-' skips a column), or by "
                   "header name: src=lhs,dst=rhs,type=rel (default: from the header's names, else by width)")
    p.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                   help="the first line of text files is (or is not) a header (default: detected)")
    p.add_argument("--delimiter", help="field delimiter of text files: tab, comma, semicolon, pipe, space, whitespace "
                   "(runs of spaces/tabs) or one character (default: detected)")
    p.add_argument("--comment", help="characters that start comment lines (default: '#%%'; '' = none)")
    p.add_argument("--partitions", type=int, help="partitions of each partitioned entity type")
    p.add_argument("--unseen", choices=["keep", "drop"],
                   help="entities seen only in valid/test: keep (default) or drop with their edges")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nodes", action="append", default=[], metavar="FILE",
                   help="node table (CSV/TSV/Parquet with a header: id, feature columns of [nodes.features])")
    p.add_argument("--labels", metavar="FILE", help="label file: id, label per line (multi-label: several lines)")
    add_config_args(p)
    add_json(p)


@command("import", _setup_import)
def _import(args: argparse.Namespace) -> int:
    from shardgraph.data.nodes import import_graph

    summary = import_graph(
        args.edges, args.out, nodes=args.nodes, labels=args.labels,
        config=load_args_config(args), valid=args.valid, test=args.test,
        format=args.format, columns=args.columns, header=args.header, delimiter=args.delimiter,
        comment=args.comment, partitions=args.partitions,
        unseen=args.unseen, overwrite=args.overwrite, progress=not (args.no_progress or args.json),
    )
    payload = summary.to_dict()
    payload = {k: payload[k] for k in ("entities", "relations", "edges", "partitions", "seconds", "peak_rss_mb",
                                       "unseen_entities", "dropped_edges", "edge_attributes", "comment_lines",
                                       "blank_lines", "detected", "path")}
    emit(args, payload, summary.line())
    return 0


# ----------------------------------------------------------------------------- info


def _setup_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset directory")
    p.add_argument("--verify", action="store_true", help="also check every file against its checksum")
    add_json(p)


@command("info", _setup_info)
def _info(args: argparse.Namespace) -> int:
    from shardgraph.data.dataset import SPLITS, Dataset

    dataset = Dataset(args.dataset)
    if args.verify:
        dataset.verify()
    if args.json:
        print(json.dumps(dataset.manifest))
        return 0
    m = dataset.manifest
    lines = [f"dataset {dataset.path} (format {m['format_version']}, shardgraph {m['shardgraph_version']}, "
             f"created {m['created']})"]
    lines.append(f"partitions: {dataset.num_partitions}")
    lines.append("entity types:")
    for t in dataset.entity_types.values():
        counts = ", ".join(f"{c:,}" for c in t.partition_counts[:8]) + (" ..." if t.partitions > 8 else "")
        unseen = m["entity_types"][t.name].get("unseen", 0)
        lines.append(f"  {t.name}: {t.count:,} entities in {t.partitions} partition(s) [{counts}]"
                     + (f", {unseen:,} seen only in valid/test" if unseen else ""))
    kind = "declared" if dataset.relations_declared else "from the edge files"
    lines.append(f"relations ({len(dataset.relations)}, {kind}):")
    shown = sorted(dataset.relations, key=lambda r: -r.edges.get("train", 0))
    for r in shown[:10]:
        edges = " / ".join(f"{r.edges.get(s, 0):,}" for s in SPLITS)
        lines.append(f"  {r.name} ({r.lhs} -> {r.rhs}): {edges}")
    if len(shown) > 10:
        lines.append(f"  ... and {len(shown) - 10} more")
    for split in SPLITS:
        info = m["splits"].get(split, {})
        buckets = info.get("buckets", [])
        dropped = info.get("dropped_edges", 0)
        lines.append(f"{split}: {info.get('edges', 0):,} edges in {len(buckets)} bucket(s)"
                     + (f", {dropped:,} dropped (unseen entities)" if dropped else ""))
    if args.verify:
        lines.append("checksums: ok")
    print("\n".join(lines))
    return 0


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    _load_command_modules()
    parser = argparse.ArgumentParser(
        prog="shardgraph", description="Embeddings of very large graphs, trained bucket by bucket.")
    parser.add_argument("--version", action="version", version=f"shardgraph {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (setup, handler) in COMMANDS.items():
        doc = (handler.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None, description=handler.__doc__)
        setup(p)
        p.set_defaults(handler=handler)
    return parser


def _load_command_modules() -> None:
    """Commands defined outside this module register themselves on import."""
    import importlib

    for module in ("shardgraph.training.commands", "shardgraph.eval.commands", "shardgraph.embeddings.commands",
                   "shardgraph.report.commands", "shardgraph.walks.commands", "shardgraph.gnn.commands"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("shardgraph")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet or (getattr(args, "json", False) and not args.verbose))
    try:
        return int(args.handler(args))
    except ShardgraphError as exc:
        print(f"shardgraph {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Cleanup has run (context managers). pyarrow chains its own SIGINT handler and can
        # deliver the same Ctrl-C again during interpreter teardown, which would turn the exit
        # status into a death by signal; leave now with the conventional 130 instead.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"shardgraph {args.command}: interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1

