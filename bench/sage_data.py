"""Planetoid datasets (shared/datasets/cora, citeseer) as shardgraph inputs: edges, a node table, labels.

    nodes.csv      id,words        words = the node's present feature ids, space-separated
    labels.tsv     id<TAB>class    labelled nodes only
    edges.tsv      u<TAB>v         self-loops dropped (the peer drops them too)
    split_*.txt    the public split, as shipped
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np


def convert(source: Path, out: Path) -> dict[str, int]:
    """Write the shardgraph inputs of a Planetoid folder into `out`; returns (nodes, features, classes)."""
    out.mkdir(parents=True, exist_ok=True)
    labels = np.loadtxt(source / "labels.tsv", dtype=np.int64, delimiter="\t", ndmin=2)
    n = int(labels[:, 0].max()) + 1
    with gzip.open(source / "features.tsv.gz", "rt") as f:
        nz = np.loadtxt(f, dtype=np.int64, delimiter="\t", ndmin=2)
    order = np.lexsort((nz[:, 1], nz[:, 0]))
    nz = nz[order]
    bounds = np.searchsorted(nz[:, 0], np.arange(n + 1))
    with open(out / "nodes.csv", "w") as f:
        f.write("id,words\n")
        for node in range(n):
            f.write(f"{node},{' '.join(map(str, nz[bounds[node]:bounds[node + 1], 1]))}\n")
    with open(out / "labels.tsv", "w") as f:
        for node, label in labels:
            if label >= 0:
                f.write(f"{node}\t{label}\n")
    with gzip.open(source / "edges.tsv.gz", "rt") as f:
        edges = np.loadtxt(f, dtype=np.int64, delimiter="\t", ndmin=2)
    edges = edges[edges[:, 0] != edges[:, 1]]
    np.savetxt(out / "edges.tsv", edges, fmt="%d", delimiter="\t")
    for split in ("train", "val", "test"):
        shutil.copy(source / f"split_{split}.txt", out / f"split_{split}.txt")
    return {"nodes": n, "features": int(nz[:, 1].max()) + 1, "classes": int(labels[:, 1].max()) + 1}
