"""`shardgraph eval`."""

from __future__ import annotations

import argparse

from shardgraph.commands import add_json, command, emit


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by `shardgraph train`")
    p.epilog = "Options not given come from the [eval] section of the run's config."
    p.add_argument("--split", choices=["valid", "test", "train"], default=None, help="split to rank (eval.split)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--filtered", dest="filtered", action="store_true", default=None,
                      help="do not count other true edges of train/valid/test (eval.filtered)")
    mode.add_argument("--raw", dest="filtered", action="store_false", help="count every candidate")
    p.add_argument("--negatives", default=None,
                   help="candidates per edge: all entities of the type, N sampled, or 'partition': "
                        "the true end's partition only (PyTorch-BigGraph's all_negs protocol) "
                        "(eval.negatives, eval.candidates)")
    p.add_argument("--batch-size", type=int, default=None, help="edges scored per matrix product (eval.batch_size)")
    p.add_argument("--max-edges", type=int, default=None,
                   help="evaluate a seeded sample of this many edges (eval.max_edges)")
    p.add_argument("--dataset", help="dataset directory, if it moved since training")
    add_json(p)


@command("eval", _setup)
def _eval(args: argparse.Namespace) -> int:
    """Rank each edge's rhs and lhs among all (or N sampled) entities: MRR, MR, Hits@k, AUC."""
    from shardgraph.errors import ShardgraphError
    from shardgraph.eval.evaluate import evaluate

    candidates: str | None = None
    negatives: int | None = None
    if args.negatives in ("all", "partition"):
        candidates, negatives = args.negatives, 0
    elif args.negatives is not None:
        try:
            negatives = int(args.negatives)
        except ValueError:
            raise ShardgraphError(f"--negatives must be 'all', 'partition' or a positive integer. "
                                  f"Got {args.negatives!r}.") from None
        if negatives <= 0:
            raise ShardgraphError(f"--negatives must be 'all' or a positive integer. Got {negatives} instead.")
    result = evaluate(args.run, split=args.split, filtered=args.filtered, negatives=negatives,
                      batch_size=args.batch_size, max_edges=args.max_edges, dataset=args.dataset,
                      progress=not args.json, save=True, candidates=candidates)
    keys = ("split", "filtered", "edges", "mrr", "mr", "hits@1", "hits@3", "hits@10", "auc")
    payload = {k: result[k] for k in keys} | {"negatives": result["negatives"], "seconds": result["seconds"],
                                              "rhs": result["rhs"], "lhs": result["lhs"]}
    kind = "filtered" if result["filtered"] else "raw"
    human = (f"{result['split']} ({kind}, {result['edges']:,} edges, candidates: {result['negatives']}): "
             f"MRR {result['mrr']:.4f}  MR {result['mr']:.1f}  Hits@1 {result['hits@1']:.4f}  "
             f"Hits@3 {result['hits@3']:.4f}  Hits@10 {result['hits@10']:.4f}  AUC {result['auc']:.4f}")
    emit(args, payload, human)
    return 0
