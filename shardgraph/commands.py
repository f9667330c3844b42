"""The registry of `shardgraph` subcommands and the helpers they share.

A subcommand is a setup function (its arguments) and a handler registered with `@command`;
`shardgraph.cli` imports the modules that define them and dispatches. Subcommand modules
import this module, not the CLI, so that imports run one way.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, setup: Callable[[argparse.ArgumentParser], None]) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = (setup, handler)
        return handler

    return register


def emit(args: argparse.Namespace, payload: dict[str, Any], human: str) -> None:
    """Print one JSON line (--json) or the human-readable text."""
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str))
    else:
        print(human)


def add_config_args(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        parser.add_argument("config", nargs="?", help="TOML config file (defaults for every missing key)")
    else:
        parser.add_argument("--config", help="TOML config file (defaults for every missing key)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key (repeatable), e.g. -p training.lr=0.05")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")


def load_args_config(args: argparse.Namespace, extra: Sequence[str] = ()) -> Any:
    from shardgraph.config import load_config

    return load_config(args.config, [*args.param, *extra])
