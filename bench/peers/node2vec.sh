#!/usr/bin/env bash
# Idempotent installer for the node2vec / DeepWalk benchmark peer (PecanPy + gensim Word2Vec).
#
#   bench/peers/node2vec.sh   # venv at $N2V_VENV (default /tmp/peer-n2v/venv); runner: bench/peers/node2vec_run.py
#
# Installs pecanpy==2.0.9 (numba random walks), gensim 4.x (Word2Vec), scikit-learn, numpy, psutil.
# No torch. Re-running is cheap: pip skips what is already satisfied, then the import check runs again.
set -euo pipefail
VENV="${N2V_VENV:-/tmp/peer-n2v/venv}"
PYTHON="${PYTHON:-python3}"
die() { echo "node2vec.sh: ERROR: $*" >&2; exit 1; }
t0=$(date +%s)

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
  || die "$PYTHON is older than 3.8 (or not found)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "node2vec.sh: creating venv $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV" || die "could not create venv $VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# numpy<2: nptyping (a pecanpy dependency) and gensim 4.3.x are built against the numpy 1.x API.
DEPS=("pecanpy==2.0.9" "gensim>=4.1,<5" "numpy>=1.20,<2" "scipy<1.14" scikit-learn psutil)
echo "node2vec.sh: pip install ${DEPS[*]}"
"${PIP[@]}" "${DEPS[@]}" || die "pip install failed (is PyPI reachable? are these versions available for $("$VENV/bin/python" -V)?)"

(cd / && "$VENV/bin/python" - <<'PY') || die "post-install import check failed"
import importlib.metadata as md
import numpy, gensim, sklearn, psutil, numba
from pecanpy import pecanpy as pp
from gensim.models import Word2Vec
from gensim.models.word2vec_inner import FAST_VERSION  # C extension present -> multi-threaded training
assert FAST_VERSION >= 0, "gensim compiled word2vec routines missing"
assert int(gensim.__version__.split(".")[0]) == 4, gensim.__version__
for m in ("SparseOTF", "PreComp", "DenseOTF"):
    assert hasattr(pp, m), m
print("node2vec.sh: OK pecanpy %s, gensim %s, numba %s, numpy %s, scikit-learn %s, psutil %s"
      % (md.version("pecanpy"), gensim.__version__, numba.__version__, numpy.__version__,
         sklearn.__version__, psutil.__version__))
PY
echo "node2vec.sh: done in $(( $(date +%s) - t0 )) s (venv: $VENV)"
