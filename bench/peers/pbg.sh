#!/usr/bin/env bash
# Install the PyTorch-BigGraph peer of the benchmarks into its own virtual environment.
#
#   bash bench/peers/pbg.sh            # venv at $PBG_VENV, default <repo>/.peers/pbg (git-ignored)
#
# Installs torch==2.13.0 (CPU, pinned first so pip never pulls a CUDA build), torchbiggraph==1.0.0
# from PyPI (a pure-Python wheel) and psutil/h5py, then patches the installed package so that it
# runs on Python 3.11, setuptools >= 81 and torch >= 2.6 (bench/peers/pbg/patch.py). Idempotent.
# The benches find the venv through the same PBG_VENV variable (bench/common.py).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${PBG_VENV:-$repo/.peers/pbg}"
python="${PYTHON:-python3}"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
started=$(date +%s)

if [ ! -x "$venv/bin/python" ]; then
  echo "pbg.sh: creating $venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi
"${pip[@]}" torch==2.13.0
"${pip[@]}" torch==2.13.0 torchbiggraph==1.0.0 attrs "h5py>=2.8" numpy tqdm psutil setuptools
package="$("$venv/bin/python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torchbiggraph").origin))')"
"$venv/bin/python" "$here/pbg/patch.py" "$package"

(cd / && "$venv/bin/python" - <<'PY')
import torch, torchbiggraph, psutil, h5py
import torchbiggraph.train, torchbiggraph.eval, torchbiggraph.converters.import_from_tsv
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
print(f"pbg.sh: torch {torch.__version__}, torchbiggraph {torchbiggraph.__version__}")
PY
for entry in torchbiggraph_import_from_tsv torchbiggraph_train torchbiggraph_eval; do
  [ -x "$venv/bin/$entry" ] || { echo "pbg.sh: $venv/bin/$entry is missing" >&2; exit 1; }
done
echo "pbg.sh: done in $(( $(date +%s) - started )) s ($venv)"
