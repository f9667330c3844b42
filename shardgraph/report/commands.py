"""`shardgraph report`."""

from __future__ import annotations

import argparse

from shardgraph.commands import add_json, command, emit


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory")
    p.add_argument("--out", help="HTML file to write (default: RUN/report.html)")
    add_json(p)


@command("report", _setup)
def _report(args: argparse.Namespace) -> int:
    """Write an HTML report of a run: metrics, training curves, throughput, embedding norms."""
    from shardgraph.report.html import write_report
    from shardgraph.report.sage import is_sage_run, write_sage_report

    path = write_sage_report(args.run, args.out) if is_sage_run(args.run) else write_report(args.run, args.out)
    emit(args, {"report": str(path)}, f"report written to {path}")
    return 0
