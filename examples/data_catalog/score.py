"""Share of new columns whose true business term is the first, or among the first two, predictions.

    python examples/data_catalog/score.py catalog/new_terms.csv catalog/new_truth.tsv
"""

from __future__ import annotations

import csv
import sys


def main() -> None:
    predictions, truth_file = sys.argv[1], sys.argv[2]
    with open(truth_file) as f:
        truth = dict(line.rstrip("\n").split("\t") for line in f)
    with open(predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    top1 = sum(r["label_1"] == truth[r["id"]] for r in rows) / len(rows)
    top2 = sum(truth[r["id"]] in (r["label_1"], r["label_2"]) for r in rows) / len(rows)
    print(f"{len(rows)} new columns: top-1 accuracy {top1:.3f}, top-2 accuracy {top2:.3f}")


if __name__ == "__main__":
    main()
