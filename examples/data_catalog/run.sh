#!/usr/bin/env bash
# The whole walk-through of README.md: generate, import, train, predict the terms of new columns.
#   examples/data_catalog/run.sh [WORKDIR]      (default: out/data_catalog; about a minute on 2 cores)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${1:-out/data_catalog}"
SG="${SHARDGRAPH:-shardgraph}"
PY="${PYTHON:-python3}"
mkdir -p "$WORK"
"$PY" "$HERE/generate.py" --out "$WORK"
"$SG" import "$WORK/lineage.tsv" --nodes "$WORK/columns.csv" --labels "$WORK/terms.tsv" \
      --config "$HERE/config.toml" --out "$WORK/catalog_ds" --overwrite
"$SG" train-sage "$HERE/config.toml" -p data.dataset="$WORK/catalog_ds" --out "$WORK/run" --overwrite
"$SG" predict-labels "$WORK/run" --nodes "$WORK/new_columns.csv" --edges "$WORK/new_lineage.tsv" -k 2 \
      --out "$WORK/new_terms.csv" --show 5
"$PY" "$HERE/score.py" "$WORK/new_terms.csv" "$WORK/new_truth.tsv"
