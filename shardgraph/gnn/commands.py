"""`shardgraph train-sage`, `shardgraph predict-labels`, `shardgraph eval-labels`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from shardgraph.commands import add_config_args, add_json, command, emit, load_args_config

if TYPE_CHECKING:
    from shardgraph.config import Config


def _setup_train(p: argparse.ArgumentParser) -> None:
    add_config_args(p, positional=True)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--holdout-test", action="store_true",
                   help="train without the test nodes and their edges, then predict them (inductive evaluation)")
    add_json(p)


@command("train-sage", _setup_train)
def _train_sage(args: argparse.Namespace) -> int:
    """Train GraphSAGE node classification on a dataset imported with node tables ([sage] config section)."""
    return train_sage_command(args, load_args_config(args))


def train_sage_command(args: argparse.Namespace, config: Config) -> int:
    """Train GraphSAGE as `args` (out, resume, overwrite, holdout_test, json) say; print the summary.
    Shared by `train-sage` and `train` with `model.kind = "sage"`."""
    from shardgraph.gnn.train import train_sage

    run = train_sage(config, args.out, resume=args.resume, overwrite=args.overwrite,
                     holdout_test=args.holdout_test)
    metrics = run.metrics
    parts = [f"{split} accuracy {metrics[split]['accuracy']:.4f} (top-2 {metrics[split]['top2_accuracy']:.4f}, "
             f"macro-F1 {metrics[split]['macro_f1']:.4f})" for split in ("valid", "test") if split in metrics]
    human = (f"trained {run.epochs} epoch(s) in {run.seconds:.1f} s (best epoch {run.best_epoch}); "
             + "; ".join(parts) + f" -> {run.path}")
    emit(args, {"path": str(run.path), **{k: v for k, v in metrics.items()}}, human)
    return 0


def _setup_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="GraphSAGE run directory (train-sage)")
    p.add_argument("--nodes", action="append", default=[], metavar="FILE",
                   help="node table of new nodes (same feature columns as in training); repeatable")
    p.add_argument("--edges", action="append", default=[], metavar="FILE",
                   help="edges of the new nodes to known or new nodes (TSV/CSV: lhs, rhs); repeatable")
    p.add_argument("--ids", nargs="+", help="predict these known nodes (default: every unlabelled node)")
    p.add_argument("--all", action="store_true", help="with --nodes: also predict every unlabelled known node")
    p.add_argument("-k", type=int, default=2, help="labels per node")
    p.add_argument("--out", help="write all predictions to a .parquet or .csv file")
    p.add_argument("--show", type=int, default=10, help="predictions printed (when not --json)")
    add_json(p)


@command("predict-labels", _setup_predict)
def _predict_labels(args: argparse.Namespace) -> int:
    """Top-k labels with probabilities for unlabelled nodes, or new nodes (inductive, no retraining)."""
    from shardgraph.gnn.predict import load_sage

    model = load_sage(args.run)
    predictions = model.predict_labels(args.ids, k=args.k, new_nodes=args.nodes, new_edges=args.edges,
                                       only_new=not args.all)
    if args.out:
        predictions.write(args.out)
    lines = [f"{r['id']}\t" + "\t".join(f"{x['label']} {x['probability']:.3f}" for x in r["labels"])
             for r in predictions.records(args.show)]
    human = "\n".join([*lines, f"{len(predictions):,} node(s) predicted" + (f" -> {args.out}" if args.out
                                                                                   else "")])
    payload = {"nodes": len(predictions), "out": args.out,
               "predictions": predictions.records(None if not args.out else args.show)}
    emit(args, payload, human)
    return 0
