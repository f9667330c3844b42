"""Walks over the CSR of a dataset, produced in blocks: DeepWalk, node2vec (p, q), metapath2vec.

    walker = Walker(graph, walk_length=80, p=0.25, q=4, seed=0)
    for block in walker.blocks(walks_per_node=10):
        block.walks      # (B, walk_length) int64 node ids, -1 after a walk's end
        block.lengths    # (B,) nodes in each walk

The compiled walker (shardgraph/_walks.c) runs on every core; every walk has its own random
stream seeded from (seed, walk id), so the walks do not depend on the thread count or the block
size. Without the compiled walker, shardgraph/walks/reference.py walks the same walks in Python.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from shardgraph.errors import ConfigError
from shardgraph.registry import did_you_mean
from shardgraph.walks.kernels import walk_kernels
from shardgraph.walks.reference import reference_walks

log = logging.getLogger(__name__)

REVERSE_SUFFIX = "_rev"


class WalkGraph(Protocol):
    """What the walker reads of a graph (shardgraph.data.csr.GraphCSR has it)."""

    @property
    def indptr(self) -> np.ndarray: ...  # (N + 1,) int64
    @property
    def indices(self) -> np.ndarray: ...  # (A,) int32 or int64, sorted within each row
    @property
    def arc_relation(self) -> np.ndarray: ...  # (A,) int32: r, or r + R for a reverse arc
    @property
    def weights(self) -> np.ndarray | None: ...  # (A,) float32
    @property
    def type_offsets(self) -> np.ndarray: ...  # (T + 1,) int64


@dataclass(frozen=True)
class RelationEnds:
    """A relation's name and the entity types at its ends (as the dataset lists them)."""

    name: str
    lhs: str
    rhs: str


@dataclass(frozen=True)
class Metapath:
    """A cyclic metapath: types[0] -> types[1] -> ... -> types[k] == types[0], the arc relation of each
    step (-1 = any arc between the two types)."""

    text: str
    types: tuple[int, ...]
    relations: tuple[int, ...]


def parse_metapath(text: str, type_names: Sequence[str], relations: Sequence[RelationEnds], directed: bool,
                   key: str = "walks.metapaths") -> Metapath:
    """'user-clicks-article-clicks_rev-user' (types and relations) or 'user-article-user' (types only)."""
    tokens = [t.strip() for t in text.split("-")]
    types = list(type_names)
    by_name = {r.name: i for i, r in enumerate(relations)}

    def type_index(name: str) -> int:
        if name not in types:
            raise ConfigError(f"{key}: {text!r} names entity type {name!r}, which the dataset does not have "
                              f"(types: {', '.join(types)}).{did_you_mean(name, types)}")
        return types.index(name)

    if len(tokens) < 2 or any(not t for t in tokens):
        raise ConfigError(f"{key}: {text!r} must look like 'user-clicks-article-clicks_rev-user' or "
                          "'user-article-user'.")
    if all(t in types for t in tokens):
        path_types = [type_index(t) for t in tokens]
        path_relations = [-1] * (len(tokens) - 1)
    else:
        if len(tokens) % 2 == 0:
            raise ConfigError(f"{key}: {text!r} must alternate types and relations, starting and ending with a "
                              "type (or name only types).")
        path_types = [type_index(t) for t in tokens[::2]]
        path_relations = []
        for step, name in enumerate(tokens[1::2]):
            reverse = name.endswith(REVERSE_SUFFIX) and name not in by_name
            base = name[: -len(REVERSE_SUFFIX)] if reverse else name
            if base not in by_name:
                names = [r.name for r in relations]
                raise ConfigError(f"{key}: {text!r} names relation {name!r}, which the dataset does not have "
                                  f"(relations: {', '.join(names[:20])}; '<relation>{REVERSE_SUFFIX}' walks one "
                                  f"backwards).{did_you_mean(base, names)}")
            rel = relations[by_name[base]]
            ends = (rel.rhs, rel.lhs) if reverse else (rel.lhs, rel.rhs)
            got = (types[path_types[step]], types[path_types[step + 1]])
            if ends != got:
                raise ConfigError(f"{key}: {text!r}: relation {name!r} goes {ends[0]} -> {ends[1]}, not "
                                  f"{got[0]} -> {got[1]}.")
            if reverse and directed:
                raise ConfigError(f"{key}: {text!r} walks {name!r} backwards, but walks.directed = true keeps "
                                  "only lhs -> rhs arcs.")
            path_relations.append(by_name[base] + (len(relations) if reverse else 0))
    if path_types[0] != path_types[-1]:
        raise ConfigError(f"{key}: {text!r} must end on the type it starts with ({types[path_types[0]]!r}), "
                          "so that walks longer than the metapath can repeat it.")
    return Metapath(text, tuple(path_types), tuple(path_relations))


@dataclass
class WalkBlock:
    """A block of walks: walks (B, L) int64 node ids, -1 after a walk's end; lengths (B,)."""

    walks: np.ndarray
    lengths: np.ndarray


class Walker:
    """Random walks over a graph, in blocks, with a seed."""

    def __init__(self, graph: WalkGraph, *, walk_length: int, p: float = 1.0, q: float = 1.0,
                 metapaths: Sequence[Metapath] = (), seed: int = 0, threads: int = 0, block_walks: int = 65_536,
                 compiled: bool | None = None) -> None:
        if walk_length < 2:
            raise ConfigError(f"walks.walk_length must be >= 2. Got {walk_length} instead.")
        for name, value in (("p", p), ("q", q)):
            if not value > 0:
                raise ConfigError(f"walks.{name} must be > 0. Got {value} instead.")
        self.indptr = np.ascontiguousarray(graph.indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(graph.indices)
        if self.indices.dtype not in (np.int32, np.int64):
            self.indices = self.indices.astype(np.int64)
        self.arc_relation = np.ascontiguousarray(graph.arc_relation, dtype=np.int32)
        self.type_offsets = np.ascontiguousarray(graph.type_offsets, dtype=np.int64)
        self.weights = None if graph.weights is None else np.ascontiguousarray(graph.weights, dtype=np.float32)
        self.row_max = None if self.weights is None else _row_max(self.indptr, self.weights)
        if self.weights is not None and (self.weights < 0).any():
            raise ConfigError("walks: the 'weight' edge attribute has negative values; walk weights must be >= 0.")
        self.walk_length, self.p, self.q, self.seed = walk_length, float(p), float(q), seed
        self.metapaths = list(metapaths)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads = threads or cores
        self.block_walks = block_walks
        self.library = walk_kernels() if compiled is not False else None
        if compiled and self.library is None:
            raise RuntimeError("the compiled walker (shardgraph._walks) is not built")
        degrees = np.diff(self.indptr)
        self.num_nodes = len(degrees)
        self.isolated = int((degrees == 0).sum())

    def start_nodes(self, metapath: Metapath | None) -> np.ndarray:
        """Nodes that start walks: every node with a neighbour (of the metapath's first type)."""
        degrees = np.diff(self.indptr)
        if metapath is None:
            return np.flatnonzero(degrees > 0)
        t = metapath.types[0]
        lo, hi = int(self.type_offsets[t]), int(self.type_offsets[t + 1])
        return lo + np.flatnonzero(degrees[lo:hi] > 0)

    def walks_per_round(self) -> int:
        plans: list[Metapath | None] = list(self.metapaths) or [None]
        return sum(len(self.start_nodes(m)) for m in plans)

    def blocks(self, walks_per_node: int, epoch: int = 0) -> Iterator[WalkBlock]:
        """walks_per_node rounds over the start nodes, in blocks of at most block_walks walks."""
        plans: list[Metapath | None] = list(self.metapaths) or [None]
        for round_index in range(walks_per_node):
            for plan_index, metapath in enumerate(plans):
                starts = self.start_nodes(metapath)
                base = ((epoch * len(plans) + plan_index) * walks_per_node + round_index) * self.num_nodes
                for begin in range(0, len(starts), self.block_walks):
                    block = starts[begin : begin + self.block_walks]
                    yield self.walk(block, base + block, metapath)

    def walk(self, starts: np.ndarray, walk_ids: np.ndarray, metapath: Metapath | None = None) -> WalkBlock:
        """Walks from `starts` (B,) with random streams `walk_ids` (B,)."""
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        walk_ids = np.ascontiguousarray(walk_ids, dtype=np.int64)
        steps_relations = steps_types = None
        if metapath is not None:
            steps_relations = np.array(metapath.relations, dtype=np.int32)
            steps_types = np.array(metapath.types[1:], dtype=np.int32)
        if self.library is None:
            walks, lengths = reference_walks(self.indptr, self.indices, self.arc_relation, self.weights, self.row_max,
                                             starts, walk_ids, self.walk_length, self.p, self.q, self.seed,
                                             steps_relations, steps_types, self.type_offsets)
            return WalkBlock(walks, lengths)
        walks = np.empty((len(starts), self.walk_length), dtype=np.int64)
        lengths = np.empty(len(starts), dtype=np.int64)

        def address(array: np.ndarray | None) -> int | None:
            return None if array is None else int(array.ctypes.data)

        self.library.sg_random_walks(
            address(self.indptr), address(self.indices), int(self.indices.dtype == np.int64),
            address(self.arc_relation), address(self.weights), address(self.row_max), address(starts),
            address(walk_ids), len(starts), self.walk_length, self.p, self.q, ctypes.c_uint64(self.seed),
            0 if metapath is None else len(metapath.relations), address(steps_relations), address(steps_types),
            address(self.type_offsets), address(walks), address(lengths), self.threads,
        )
        return WalkBlock(walks, lengths)


def _row_max(indptr: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N,) float32 largest weight of each row (0 for an empty row)."""
    out = np.zeros(len(indptr) - 1, dtype=np.float32)
    non_empty = np.flatnonzero(np.diff(indptr) > 0)
    if len(non_empty):
        out[non_empty] = np.maximum.reduceat(weights, indptr[non_empty])
    return out
