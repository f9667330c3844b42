"""`shardgraph train`."""

from __future__ import annotations

import argparse

from shardgraph.commands import add_config_args, add_json, command, emit, load_args_config


def _setup(p: argparse.ArgumentParser) -> None:
    add_config_args(p, positional=True)
    p.add_argument("--dataset", help="imported dataset directory (default: data.dataset of the config)")
    p.add_argument("--out", help="run directory (default: runs/<dataset name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--distributed", action="store_true",
                   help="one of several trainers launched by torchrun (reads its environment)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json(p)


@command("train", _setup)
def _train(args: argparse.Namespace) -> int:
    """Train embeddings on an imported dataset; writes checkpoints to a run directory."""
    from shardgraph.training.trainer import train

    config = load_args_config(args)
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
