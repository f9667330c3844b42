"""PyTorch-BigGraph's ranking evaluation against all entities of a partition; runs in the peer's venv.

    $PBG_VENV/bin/python bench/peers/pbg/evaluate.py CONFIG [-p key=value ...]

Loads the config (with `torchbiggraph_eval`'s -p overrides: edge_paths=<the test edges>), turns
on `all_negs` for every relation and drops the uniform negatives, then runs PBG's own
`do_eval_and_report_stats` with its RankingEvaluator: each edge, both ends, is ranked against
every entity of the true end's partition (the positive itself masked), raw. Prints PBG's
overall metrics (mrr, r1, r10, r50, pos_rank, auc) and the edge count as one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json

import attr
from torchbiggraph.config import ConfigFileLoader
from torchbiggraph.eval import do_eval_and_report_stats
from torchbiggraph.util import SubprocessInitializer, set_logging_verbosity, setup_logging


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("-p", "--param", action="append", nargs="*", default=[])
    args = ap.parse_args()
    setup_logging()
    config = ConfigFileLoader().load_config(args.config, list(itertools.chain.from_iterable(args.param)))
    set_logging_verbosity(config.verbose)
    config = attr.evolve(config, relations=[attr.evolve(r, all_negs=True) for r in config.relations],
                         num_uniform_negs=0)
    init = SubprocessInitializer()
    init.register(setup_logging, config.verbose)
    overall = None
    for index, _, stats in do_eval_and_report_stats(config, subprocess_init=init):
        if index is None:
            overall = stats
    if overall is None:
        raise SystemExit("evaluate.py: PBG reported no overall statistics (no edges?)")
    print(json.dumps({**overall.metrics, "count": overall.count}))


if __name__ == "__main__":
    main()
