"""Neighbour sampling for GraphSAGE mini-batches (what to take; `gnn.loader` feeds it to the model).

For a batch of target nodes and fan-outs [f1, f2, ...] (f1 for the layer nearest the targets),
layer l samples up to f_l neighbours of every node of frontier l without replacement; frontier
l+1 is frontier l followed by the newly met nodes. Each layer is a `Block`: the arcs (dst, src) of
a bipartite graph from frontier l+1 (sources) to frontier l (destinations), where the first
destinations are also the first sources. A fan-out < 0 takes every neighbour.

The compiled kernel (shardgraph/_sampler.c) samples on all cores; without it numpy does the same.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from shardgraph.data.nodes import ranges
from shardgraph.utils.kernels import load_extension

log = logging.getLogger(__name__)


@cache
def _library() -> ctypes.CDLL | None:
    library = load_extension("shardgraph._sampler", "neighbour sampling runs as numpy ops")
    if library is None:
        return None
    i64, u64, pointer = ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p
    for name in ("sample_neighbors_i32", "sample_neighbors_i64"):
        getattr(library, name).argtypes = [pointer, pointer, pointer, i64, i64, u64, pointer, pointer]
        getattr(library, name).restype = None
    library.relabel.argtypes = [pointer, i64, pointer, pointer, pointer, pointer]
    library.relabel.restype = None
    return library


def _pointer(array: np.ndarray) -> int:
    return int(array.ctypes.data)


@dataclass(frozen=True)
class Block:
    """One layer of a sampled computation graph.

    `dst` (E,) and `src` (E,) index the destination and source frontiers: arc k says that
    source node src[k] is a sampled neighbour of destination dst[k]. Destinations are the first
    `num_dst` sources.
    """

    dst: np.ndarray
    src: np.ndarray
    num_dst: int
    num_src: int


def sample_rows(indptr: np.ndarray, indices: np.ndarray, targets: np.ndarray, fanout: int, seed: int,
                compiled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(counts (n,), neighbours (sum counts,)) of up to `fanout` neighbours per target, without replacement."""
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    degree = indptr[targets + 1] - indptr[targets]
    if fanout < 0:  # every neighbour
        return degree, np.asarray(indices[ranges(indptr[targets], degree)], dtype=np.int64)
    library = _library() if compiled else None
    if library is not None and indptr.dtype == np.int64 and indices.dtype in (np.int32, np.int64):
        counts = np.empty(len(targets), dtype=np.int64)
        out = np.empty(len(targets) * fanout, dtype=np.int64)
        kernel = library.sample_neighbors_i32 if indices.dtype == np.int32 else library.sample_neighbors_i64
        kernel(_pointer(np.ascontiguousarray(indptr)), _pointer(np.ascontiguousarray(indices)), _pointer(targets),
               len(targets), fanout, seed & 0xFFFFFFFFFFFFFFFF, _pointer(counts), _pointer(out))
        keep = (np.arange(fanout)[None, :] < counts[:, None]).ravel()
        return counts, out[keep]
    return _sample_rows_numpy(indptr, indices, targets, degree, fanout, seed)


def _sample_rows_numpy(indptr: np.ndarray, indices: np.ndarray, targets: np.ndarray, degree: np.ndarray,
                       fanout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The same draw as the kernel in numpy: every arc of a row gets a random key, the `fanout`
    smallest keys win (a uniform subset without replacement)."""
    counts = np.minimum(degree, fanout)
    starts = indptr[targets]
    row_of = np.repeat(np.arange(len(targets)), degree)
    arc = np.arange(int(degree.sum()), dtype=np.int64) - np.repeat(np.cumsum(degree) - degree, degree) \
        + np.repeat(starts, degree)
    keys = np.random.default_rng(seed).random(len(arc))
    order = np.lexsort((keys, row_of))
    rank = np.arange(len(arc)) - np.repeat(np.cumsum(degree) - degree, degree)
    chosen = order[rank < np.repeat(counts, degree)]
    return counts, np.asarray(indices[arc[chosen]], dtype=np.int64)


class NeighborSampler:
    """Sampled multi-layer neighbourhoods of target nodes over a CSR (indptr (N+1,), indices (A,))."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, fanouts: Sequence[int], seed: int = 0,
                 compiled: bool = True) -> None:
        self.indptr, self.indices = indptr, indices
        self.fanouts = list(fanouts)
        self.seed = seed
        self.compiled = compiled and _library() is not None
        self.num_nodes = int(indptr.shape[0] - 1)
        self._position = np.full(self.num_nodes, -1, dtype=np.int64) if self.compiled else None
        self._calls = 0

    def sample(self, targets: np.ndarray) -> tuple[np.ndarray, list[Block]]:
        """(nodes, blocks): `nodes` are the node ids of the last frontier (inputs), targets first;
        blocks[0] feeds the targets (apply the model's layers to blocks[::-1])."""
        self._calls += 1
        frontier = np.ascontiguousarray(targets, dtype=np.int64)
        blocks = []
        for layer, fanout in enumerate(self.fanouts):
            seed = (self.seed * 1_000_003 + self._calls) * 64 + layer
            counts, neighbours = sample_rows(self.indptr, self.indices, frontier, fanout, seed, self.compiled)
            nodes, local = self._relabel(frontier, neighbours)
            dst = np.repeat(np.arange(len(frontier), dtype=np.int64), counts)
            blocks.append(Block(dst=dst, src=local, num_dst=len(frontier), num_src=len(nodes)))
            frontier = nodes
        return frontier, blocks

    def _relabel(self, frontier: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(frontier followed by new nodes in order of first appearance, local index of each neighbour)."""
        library = _library()
        if self._position is not None and library is not None:
            order = np.empty(len(frontier) + len(neighbours), dtype=np.int64)
            count = np.zeros(1, dtype=np.int64)
            scratch = np.empty(len(frontier), dtype=np.int64)
            local = np.empty(len(neighbours), dtype=np.int64)
            library.relabel(_pointer(frontier), len(frontier), _pointer(self._position), _pointer(order),
                            _pointer(count), _pointer(scratch))
            library.relabel(_pointer(neighbours), len(neighbours), _pointer(self._position), _pointer(order),
                            _pointer(count), _pointer(local))
            nodes = order[: int(count[0])].copy()
            self._position[nodes] = -1
            return nodes, local
        new = neighbours[~np.isin(neighbours, frontier)]
        _, first = np.unique(new, return_index=True)
        nodes = np.concatenate([frontier, new[np.sort(first)]])
        sorter = np.argsort(nodes, kind="stable")
        local = sorter[np.searchsorted(nodes, neighbours, sorter=sorter)]
        return nodes, local
