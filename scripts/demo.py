"""`make demo`: import FB15k-237 (shipped in data/), train it with configs/fb15k237.toml,
evaluate the test split (filtered ranking against all entities) and write an HTML report; then
the data-catalog example (examples/data_catalog/): generate a warehouse catalog, train GraphSAGE
on it, predict the top-2 business terms of new columns, score them and write its report.
`python scripts/demo.py --only kg|catalog` runs one of the two."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import shardgraph  # noqa: E402
from shardgraph.cli import setup_logging  # noqa: E402
from shardgraph.report.html import write_report  # noqa: E402


def knowledge_graph() -> None:
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


def data_catalog() -> None:
    from shardgraph.data.nodes import import_graph
    from shardgraph.gnn.predict import load_sage
    from shardgraph.gnn.train import train_sage
    from shardgraph.report.sage import write_sage_report

    example, work = REPO / "examples" / "data_catalog", REPO / "runs" / "data_catalog"
    started = time.perf_counter()
    subprocess.run([sys.executable, str(example / "generate.py"), "--out", str(work)], check=True)
    config = shardgraph.load_config(example / "config.toml", [f"data.dataset={work / 'catalog_ds'}"])
    import_graph([work / "lineage.tsv"], work / "catalog_ds", nodes=[work / "columns.csv"],
                 labels=work / "terms.tsv", config=config, overwrite=True)
    run = train_sage(config, work / "run", overwrite=True)
    test = run.metrics["test"]
    print(f"data catalog, GraphSAGE: {run.epochs} epochs in {run.seconds:.0f} s; test accuracy "
          f"{test['accuracy']:.4f}, top-2 {test['top2_accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f}")
    predictions = load_sage(run.path).predict_labels(k=2, new_nodes=[work / "new_columns.csv"],
                                                     new_edges=[work / "new_lineage.tsv"])
    predictions.write(work / "new_terms.csv")
    with open(work / "new_truth.tsv") as f:
        truth = dict(line.rstrip("\n").split("\t") for line in f)
    with open(work / "new_terms.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    top1 = sum(r["label_1"] == truth[r["id"]] for r in rows) / len(rows)
    top2 = sum(truth[r["id"]] in (r["label_1"], r["label_2"]) for r in rows) / len(rows)
    for record in predictions.records(3):
        print("  " + record["id"] + "  " + ", ".join(f"{x['label']} {x['probability']:.2f}" for x in record["labels"]))
    print(f"{len(rows)} new columns (inductive, no retraining): top-1 accuracy {top1:.3f}, top-2 {top2:.3f}")
    print(f"report: {write_sage_report(run.path)}")
    print(json.dumps({"demo": "data_catalog", "test_accuracy": round(test["accuracy"], 4),
                      "test_top2_accuracy": round(test["top2_accuracy"], 4), "new_top1": round(top1, 4),
                      "new_top2": round(top2, 4), "total_s": round(time.perf_counter() - started, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["kg", "catalog"])
    args = parser.parse_args()
    setup_logging(verbose=False, quiet=False)
    if args.only in (None, "kg"):
        knowledge_graph()
    if args.only in (None, "catalog"):
        data_catalog()


if __name__ == "__main__":
    main()
