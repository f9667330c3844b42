"""`make demo`: import FB15k-237 (shipped in data/), train it with configs/fb15k237.toml,
evaluate the test split (filtered ranking against all entities) and write an HTML report."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import shardgraph  # noqa: E402
from shardgraph.cli import setup_logging  # noqa: E402
from shardgraph.report.html import write_report  # noqa: E402


def main() -> None:
    setup_logging(verbose=False, quiet=False)
    source = REPO / "data" / "fb15k-237"
    dataset = REPO / "data" / "imported" / "fb15k-237"
    run_dir = REPO / "runs" / "fb15k237"
    started = time.perf_counter()

    summary = shardgraph.import_edges([source / "train.txt.gz"], dataset, valid=[source / "valid.txt.gz"],
                                      test=[source / "test.txt.gz"], overwrite=True)
    print(summary.line(), flush=True)
    config = shardgraph.load_config(REPO / "configs" / "fb15k237.toml", [f"data.dataset={dataset}"])
    run = shardgraph.train(config, run_dir=run_dir, overwrite=True)
    print(f"trained {run.epochs} epochs in {run.train_s:.0f} s ({run.edges_per_sec:,.0f} edges/s), "
          f"peak memory {run.peak_rss_mb:,.0f} MiB", flush=True)
    metrics = shardgraph.evaluate(run.path, split="test", filtered=True, save=True, progress=True)
    keys = ("mrr", "mr", "hits@1", "hits@3", "hits@10", "auc")
    print("FB15k-237 test, filtered ranking against all 14,541 entities:")
    print("  " + "  ".join(f"{k.upper() if k in ('mrr', 'mr', 'auc') else k} {metrics[k]:.4f}" for k in keys))
    report = write_report(run.path)
    print(f"report: {report}")
    print(json.dumps({"demo": "fb15k237", **{k: round(metrics[k], 4) for k in keys},
                      "train_s": round(run.train_s, 1), "total_s": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
