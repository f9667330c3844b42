#!/usr/bin/env bash
# Idempotent installer for the PyG GraphSAGE benchmark peer of bench/sage_bench.py
# (adapted from shared/peers/pyg-sage/install.sh); the peer's driver is bench/peers/pyg_sage_run.py.
#
#   bash bench/peers/pyg_sage.sh   # venv at $SAGE_VENV, default <repo>/.peers/pyg-sage (git-ignored)
#
# torch is always pinned to exactly torch==2.13.0: on this machine pip resolves that pin to a
# CPU wheel, while any looser spec can pull a multi-GB CUDA build. torch-geometric is pure Python;
# pyg-lib / torch-sparse / torch-scatter are NOT on PyPI for this torch, so only full-batch
# SAGEConv is used (NeighborLoader would fail with "requires either pyg-lib or torch-sparse").
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${SAGE_VENV:-$(cd "$here/../.." && pwd)/.peers/pyg-sage}"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="torch==2.13.0"
die() { echo "install.sh: ERROR: $*" >&2; exit 1; }
t0=$(date +%s)

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
  || die "$PYTHON is older than 3.9"
if [ ! -x "$VENV/bin/python" ]; then
  echo "install.sh: creating venv $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV" || die "could not create venv $VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

# torch first, alone, with the exact pin; then the rest with the pin repeated so the resolver
# can never upgrade or replace torch.
"${PIP[@]}" "$TORCH_PIN" || die "pip install $TORCH_PIN failed (is PyPI reachable?)"
"${PIP[@]}" "$TORCH_PIN" "torch-geometric" scikit-learn numpy scipy psutil \
  || die "pip install of torch-geometric / scikit-learn / numpy / psutil failed"

(cd / && "$VENV/bin/python" - <<'PY') || die "post-install check failed"
import torch, torch_geometric, sklearn, numpy, psutil
from torch_geometric.nn import SAGEConv
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
conv = SAGEConv(4, 2, aggr="mean")
out = conv(torch.ones(3, 4), torch.tensor([[0, 1], [1, 2]]))
assert out.shape == (3, 2)
print(f"install.sh: OK torch {torch.__version__} (cuda available: {torch.cuda.is_available()}), "
      f"torch_geometric {torch_geometric.__version__}, sklearn {sklearn.__version__}, "
      f"numpy {numpy.__version__}, psutil {psutil.__version__}")
PY
echo "install.sh: done in $(( $(date +%s) - t0 )) s (venv: $VENV)"
