"""The neighbourhoods GraphSAGE aggregates over: the dataset's CSR, cleaned as the config asks."""

from __future__ import annotations

import numpy as np

from shardgraph.data.csr import GraphCSR

_CHUNK = 1 << 22  # arcs read at a time


def drop_arcs(indptr: np.ndarray, indices: np.ndarray, self_loops: bool,
              removed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) without self-loops (unless `self_loops`) and without arcs touching the
    nodes flagged in `removed` (N,) bool; the input itself when nothing is dropped.

    Rows are read in chunks of about 4M arcs, so memory beyond the result is bounded."""
    n = len(indptr) - 1
    indptr = np.asarray(indptr)
    keeps, new_counts = [], []
    start = 0
    while start < n:
        stop = int(min(n, max(start + 1, np.searchsorted(indptr, indptr[start] + _CHUNK, side="right") - 1)))
        lo, hi = int(indptr[start]), int(indptr[stop])
        heads = np.asarray(indices[lo:hi], dtype=np.int64)
        row_of = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(indptr[start : stop + 1]))
        keep = np.ones(hi - lo, dtype=bool)
        if not self_loops:
            keep &= heads != row_of + start
        if removed is not None:
            keep &= ~removed[heads] & ~removed[row_of + start]
        keeps.append(keep)
        new_counts.append(np.bincount(row_of[keep], minlength=stop - start))
        start = stop
    if all(k.all() for k in keeps):
        return indptr, indices
    new_indptr = np.concatenate([[0], np.cumsum(np.concatenate(new_counts))]).astype(np.int64)
    out = np.empty(int(new_indptr[-1]), dtype=indices.dtype)
    at = 0
    start = 0
    for keep in keeps:
        piece = np.asarray(indices[start : start + len(keep)])[keep]
        out[at : at + len(piece)] = piece
        at += len(piece)
        start += len(keep)
    return new_indptr, out


def neighbourhoods(graph: GraphCSR, self_loops: bool, removed: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The (indptr, indices) the sampler and the full-batch model use."""
    return drop_arcs(graph.indptr, graph.indices, self_loops, removed)
