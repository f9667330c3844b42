"""`shardgraph train`."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from shardgraph.commands import add_config_args, add_json, command, emit, load_args_config
from shardgraph.errors import ConfigError

if TYPE_CHECKING:
    from shardgraph.config import Config


def _setup(p: argparse.ArgumentParser) -> None:
    add_config_args(p, positional=True)
    p.add_argument("--dataset", help="imported dataset directory (default: data.dataset of the config)")
    p.add_argument("--out", help="run directory (default: runs/<dataset name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--distributed", action="store_true",
                   help="one of several trainers launched by torchrun (reads its environment)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--holdout-test", action="store_true",
                   help="model.kind = sage: train without the test nodes and their edges, then predict them")
    add_json(p)


@command("train", _setup)
def _train(args: argparse.Namespace) -> int:
    """Train embeddings on an imported dataset; writes checkpoints to a run directory."""
    from shardgraph.training.trainer import train

    config = load_args_config(args)
    if config.model.kind == "sage":
        return _train_sage(args, config)
    if args.holdout_test:
        raise ConfigError("--holdout-test applies to GraphSAGE runs (model.kind = \"sage\") only.")
    progress = not (args.no_progress or args.json)
    from shardgraph.distributed.launch import distributed_environment

    env = distributed_environment()
    if args.distributed or (env is not None and env["world_size"] > 1):
        from shardgraph.distributed.launch import train_distributed

        run = train_distributed(config, dataset=args.dataset, run_dir=args.out, resume=args.resume,
                                overwrite=args.overwrite, progress=progress)
    else:
        run = train(config, dataset=args.dataset, run_dir=args.out, resume=args.resume, overwrite=args.overwrite,
                    progress=progress)
    human = (f"trained {run.epochs} epoch(s): {run.edges:,} edges in {run.train_s:.1f} s "
             f"({run.edges_per_sec:,.0f} edges/s), peak memory {run.peak_rss_mb:,.0f} MiB -> {run.path}")
    emit(args, run.to_dict(), human)
    return 0


def _train_sage(args: argparse.Namespace, config: Config) -> int:
    """`train` of a config with model.kind = "sage": `train-sage`, with --dataset honoured."""
    from shardgraph.gnn.commands import train_sage_command

    if args.distributed:
        raise ConfigError("GraphSAGE runs (model.kind = \"sage\") train on one machine; drop --distributed.")
    if not args.out:
        raise ConfigError("GraphSAGE runs (model.kind = \"sage\") need --out RUN_DIRECTORY.")
    if args.dataset:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, dataset=args.dataset))
    return train_sage_command(args, config)
