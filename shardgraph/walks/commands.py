"""`shardgraph eval-nodes`."""

from __future__ import annotations

import argparse

from shardgraph.commands import add_config_args, add_json, command, emit, load_args_config


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `shardgraph train`")
    p.add_argument("--labels", required=True,
                   help="label file: lines 'node label [label ...]' (whitespace or commas; .gz ok)")
    p.add_argument("--train-fraction", type=float, nargs="+", default=[0.1, 0.5, 0.9],
                   help="fractions of the labelled nodes to train on (default: 0.1 0.5 0.9)")
    p.add_argument("--repeats", type=int, default=10, help="random splits per fraction (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits")
    p.add_argument("--type", dest="entity_type", help="entity type the labels are of (default: the first)")
    p.add_argument("--jobs", type=int, default=1, help="processes fitting the one-vs-rest classifiers")
    add_json(p)


@command("eval-nodes", _setup)
def _eval_nodes(args: argparse.Namespace) -> int:
    """Node classification: one-vs-rest logistic regression on the embeddings, Micro/Macro-F1."""
    from shardgraph.errors import ShardgraphError
    from shardgraph.walks.classify import evaluate_nodes

    if args.repeats < 1:
        raise ShardgraphError(f"--repeats must be >= 1. Got {args.repeats} instead.")
    result = evaluate_nodes(args.run, args.labels, train_fractions=args.train_fraction, repeats=args.repeats,
                            seed=args.seed, entity_type=args.entity_type, jobs=args.jobs)
    lines = [f"{result['labelled_nodes']:,} labelled {result['entity_type']} nodes"
             + (f" ({result['unknown_ids']:,} labelled ids not in the run, left out)" if result["unknown_ids"] else "")]
    for r in result["results"]:
        lines.append(f"train {r['train_fraction']:.0%}: Micro-F1 {r['micro_f1']:.4f} ± {r['micro_f1_std']:.4f}  "
                     f"Macro-F1 {r['macro_f1']:.4f} ± {r['macro_f1_std']:.4f}  ({r['repeats']} splits)")
    emit(args, result, "\n".join(lines))
    return 0


def _setup_walks(p: argparse.ArgumentParser) -> None:
    add_config_args(p, positional=True)
    p.add_argument("--dataset", help="imported dataset directory (default: data.dataset of the config)")
    p.add_argument("--out", required=True, help="directory of the walk corpus (a dataset of context edges)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json(p)


@command("walks", _setup_walks)
def _walks(args: argparse.Namespace) -> int:
    """Walk the graph and write the skip-gram pairs as a dataset (what `train` does first with [walks])."""
    import dataclasses

    from shardgraph.data.dataset import Dataset
    from shardgraph.errors import ConfigError
    from shardgraph.walks.corpus import build_walk_corpus

    config = load_args_config(args)
    if config.walks.method == "none":
        raise ConfigError("walks.method is \"none\": set it to deepwalk, node2vec or metapath2vec.")
    if args.dataset:
        config = config.replace(data=dataclasses.replace(config.data, dataset=args.dataset))
    if not config.data.dataset:
        raise ConfigError("No dataset: set data.dataset in the config or pass --dataset.")
    corpus = build_walk_corpus(config, Dataset(config.data.dataset), args.out, overwrite=args.overwrite,
                               progress=not (args.no_progress or args.json))
    stats = corpus.manifest["walk_stats"]
    emit(args, stats | {"path": str(corpus.path)},
         f"{stats['walks']:,} walks -> {stats['pairs']:,} pairs in {stats['seconds']:.1f} s "
         f"({stats['isolated_nodes']:,} isolated nodes without walks) -> {corpus.path}")
    return 0
