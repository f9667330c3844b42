"""`shardgraph report`."""

from __future__ import annotations

import argparse

from shardgraph.commands import add_json, command, emit
from shardgraph.errors import ConfigError


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--out", help="HTML file to write (default: RUN/report.html)")
    p.add_argument("--labels", help="embedding runs: a file of id, label lines (TSV or CSV) that colours the "
                                    "map of the embeddings (default: coloured by entity type)")
    add_json(p)


@command("report", _setup)
def _report(args: argparse.Namespace) -> int:
    """Write an HTML report of a run: metrics, training curves, throughput, embedding norms."""
    from shardgraph.report.html import write_report
    from shardgraph.report.sage import is_sage_run, write_sage_report

    if is_sage_run(args.run):
        if args.labels:
            raise ConfigError("--labels colours the map of an embedding run; a GraphSAGE run's maps use its own labels")
        path = write_sage_report(args.run, args.out)
    else:
        path = write_report(args.run, args.out, labels=args.labels)
    emit(args, {"report": str(path)}, f"report written to {path}")
    return 0
