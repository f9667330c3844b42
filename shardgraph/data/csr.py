"""The graph of an imported dataset as compressed sparse rows (CSR), for walks and neighbour sampling.

Built once per (split, directed) from the split's edge buckets in bounded memory and kept in the
dataset directory, then memory-mapped:

    DATASET/csr/<split>-<directed|undirected>/
      meta.json          what it was built from (the buckets' checksums), counts, node types
      indptr.npy         (N+1,) int64; the arcs of node v are indptr[v] .. indptr[v+1]-1
      indices.npy        (A,) int32 (int64 from 2**31 nodes): the arcs' heads, sorted within each row
      arc_relation.npy   (A,) int32: r for an arc along relation r (lhs -> rhs), r + R for the reverse arc
      weights.npy        (A,) float32, only where the dataset has a `weight` edge attribute

Node ids are contiguous per entity type (types in manifest order); within a type they are the
type's global ids (partition offset + local id, as in `Dataset.global_edges`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shardgraph.data.dataset import LHS, REL, RHS, Dataset
from shardgraph.data.derived import is_current, source_key
from shardgraph.errors import DatasetError
from shardgraph.utils.atomic import atomic_directory

log = logging.getLogger(__name__)

CSR_FORMAT_VERSION = 1
WEIGHT_ATTRIBUTE = "weight"
_CHUNK_ROWS = 1 << 18  # edges read from a bucket at a time: small sorts are as fast, and the temporaries stay small
_SORT_ARCS = 1 << 20  # arcs sorted together when ordering rows (1M nodes / 10M edges: build peak 772 -> 383 MiB)


@dataclass(frozen=True)
class GraphCSR:
    """The arcs of a graph grouped by tail node. Arrays are memory maps of the files above."""

    indptr: np.ndarray
    indices: np.ndarray
    arc_relation: np.ndarray
    weights: np.ndarray | None
    type_names: tuple[str, ...]
    type_offsets: np.ndarray
    relation_names: tuple[str, ...]
    directed: bool

    @property
    def num_nodes(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def num_arcs(self) -> int:
        return int(self.indices.shape[0])

    def degrees(self) -> np.ndarray:
        """(N,) int64 out-degree (arcs, multi-edges counted) of every node."""
        return np.diff(np.asarray(self.indptr))

    def node_id(self, entity_type: str, global_ids: np.ndarray | int) -> np.ndarray:
        """Node ids of an entity type's global ids."""
        try:
            t = self.type_names.index(entity_type)
        except ValueError:
            raise DatasetError(f"Unknown entity type {entity_type!r}; the graph has {list(self.type_names)}.") from None
        ids = np.asarray(global_ids, dtype=np.int64)
        size = self.type_offsets[t + 1] - self.type_offsets[t]
        if ids.size and (ids.min() < 0 or ids.max() >= size):
            raise DatasetError(f"Global ids of {entity_type!r} must lie in [0, {size}).")
        return ids + self.type_offsets[t]

    def entity_of(self, node_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(type index, global id within the type) of each node id."""
        nodes = np.asarray(node_ids, dtype=np.int64)
        types = np.searchsorted(self.type_offsets, nodes, side="right") - 1
        return types, nodes - self.type_offsets[types]

    def neighbors(self, node: int) -> np.ndarray:
        return np.asarray(self.indices[self.indptr[node] : self.indptr[node + 1]])


def csr_directory(dataset: Dataset, split: str, directed: bool) -> Path:
    return dataset.path / "csr" / f"{split}-{'directed' if directed else 'undirected'}"


def load_csr(dataset: Dataset | str | Path, split: str = "train", directed: bool = False,
             build: bool = True) -> GraphCSR:
    """The CSR of a split's edges, built on first use (or when the dataset changed), then memory-mapped."""
    if not isinstance(dataset, Dataset):
        dataset = Dataset(dataset)
    if split not in dataset.manifest.get("splits", {}):
        raise DatasetError(f"{dataset.path} has no {split!r} edges; it has {sorted(dataset.manifest['splits'])}.")
    directory = csr_directory(dataset, split, directed)
    source = source_key(dataset, [split])
    if not is_current(directory, source, CSR_FORMAT_VERSION):
        if not build:
            raise DatasetError(f"{directory} is missing or stale; load it with build=True to build it.")
        build_csr(dataset, split, directed, directory, source)
    return _open(directory, dataset, directed)


def _open(directory: Path, dataset: Dataset, directed: bool) -> GraphCSR:
    meta = json.loads((directory / "meta.json").read_text())

    def load(name: str) -> np.ndarray:
        array = np.load(directory / name, mmap_mode="r")
        return array

    indptr, indices, arc_relation = load("indptr.npy"), load("indices.npy"), load("arc_relation.npy")
    if indptr.shape != (meta["nodes"] + 1,) or indices.shape != (meta["arcs"],) or arc_relation.shape != indices.shape:
        raise DatasetError(f"{directory} does not match its meta.json; delete the directory to rebuild it.")
    weights = load("weights.npy") if meta["weighted"] else None
    return GraphCSR(
        indptr=indptr, indices=indices, arc_relation=arc_relation, weights=weights,
        type_names=tuple(meta["types"]), type_offsets=np.asarray(meta["type_offsets"], dtype=np.int64),
        relation_names=tuple(r.name for r in dataset.relations), directed=directed,
    )


def _type_offsets(dataset: Dataset) -> np.ndarray:
    counts = [t.count for t in dataset.entity_types.values()]
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _arc_chunks(dataset: Dataset, split: str, directed: bool, weighted: bool
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(tail node, head node, arc relation, weight) of every arc, a chunk of a bucket at a time."""
    types = list(dataset.entity_types.values())
    type_index = {t.name: i for i, t in enumerate(types)}
    type_base = _type_offsets(dataset)
    num_relations = len(dataset.relations)
    lhs_type = np.array([type_index[r.lhs] for r in dataset.relations], dtype=np.int64)
    rhs_type = np.array([type_index[r.rhs] for r in dataset.relations], dtype=np.int64)

    def base(type_of_relation: np.ndarray, partition: int) -> np.ndarray:
        """(R,) node id of local id 0 of `partition` of each relation's lhs (or rhs) type."""
        return np.array([type_base[t] + types[t].offsets[partition if types[t].partitions > 1 else 0]
                         for t in type_of_relation], dtype=np.int64)

    for info, edges in dataset.iter_edges(split):
        lhs_base, rhs_base = base(lhs_type, info.lhs), base(rhs_type, info.rhs)
        weight_map = dataset.bucket_attribute(split, info.lhs, info.rhs, WEIGHT_ATTRIBUTE) if weighted else None
        for start in range(0, info.edges, _CHUNK_ROWS):
            block = np.asarray(edges[start : start + _CHUNK_ROWS], dtype=np.int64)
            rel = block[:, REL]
            tail = block[:, LHS] + lhs_base[rel]
            head = block[:, RHS] + rhs_base[rel]
            weight = None if weight_map is None else np.asarray(weight_map[start : start + _CHUNK_ROWS], np.float32)
            yield tail, head, rel, weight
            if not directed:
                yield head, tail, rel + num_relations, weight


def build_csr(dataset: Dataset, split: str, directed: bool, directory: Path, source: str | None = None) -> None:
    """Write the CSR of a split into `directory` (atomically): count degrees, place arcs, sort rows."""
    num_nodes = int(sum(t.count for t in dataset.entity_types.values()))
    weighted = WEIGHT_ATTRIBUTE in dataset.edge_attributes
    log.info("building the %s CSR of %s (%d nodes)", "directed" if directed else "undirected", dataset.path, num_nodes)

    degree = np.zeros(num_nodes, dtype=np.int64)
    for tail, _, _, _ in _arc_chunks(dataset, split, directed, weighted):
        _add_counts(degree, tail)
    num_arcs = int(degree.sum())
    index_dtype = np.int32 if num_nodes < 2**31 else np.int64

    with atomic_directory(directory, overwrite=True) as temp:
        indptr = np.lib.format.open_memmap(temp / "indptr.npy", mode="w+", dtype=np.int64, shape=(num_nodes + 1,))
        indptr[0] = 0
        np.cumsum(degree, out=indptr[1:])
        del degree
        indices = np.lib.format.open_memmap(temp / "indices.npy", mode="w+", dtype=index_dtype, shape=(num_arcs,))
        relation = np.lib.format.open_memmap(temp / "arc_relation.npy", mode="w+", dtype=np.int32,
                                             shape=(num_arcs,))
        weights = (np.lib.format.open_memmap(temp / "weights.npy", mode="w+", dtype=np.float32, shape=(num_arcs,))
                   if weighted else None)
        cursor = np.array(indptr[:-1])
        for tail, head, rel, weight in _arc_chunks(dataset, split, directed, weighted):
            order = np.argsort(tail, kind="stable")
            tails = tail[order]
            starts = np.flatnonzero(np.r_[True, tails[1:] != tails[:-1]])
            counts = np.diff(np.r_[starts, tails.shape[0]])
            rank = np.arange(tails.shape[0]) - np.repeat(starts, counts)
            position = cursor[tails] + rank
            cursor[tails[starts]] += counts
            indices[position] = head[order]
            relation[position] = rel[order]
            if weights is not None and weight is not None:
                weights[position] = weight[order]
        del cursor
        _sort_rows(indptr, indices, relation, weights)
        for array in (indptr, indices, relation, weights):
            if array is not None:
                array.flush()
        meta = {
            "format_version": CSR_FORMAT_VERSION, "source": source or source_key(dataset, [split]), "split": split,
            "directed": directed, "nodes": num_nodes, "arcs": num_arcs, "weighted": weighted,
            "types": list(dataset.entity_types), "type_offsets": _type_offsets(dataset).tolist(),
        }
        (temp / "meta.json").write_text(json.dumps(meta, indent=1))


def _add_counts(degree: np.ndarray, nodes: np.ndarray) -> None:
    """degree[v] += occurrences of v in `nodes`, without an (N,) temporary per chunk."""
    if nodes.size == 0:
        return
    low, high = int(nodes.min()), int(nodes.max())
    if high - low < 4 * nodes.size:
        degree[low : high + 1] += np.bincount(nodes - low, minlength=high - low + 1)
    else:
        unique, counts = np.unique(nodes, return_counts=True)
        degree[unique] += counts


def _sort_rows(indptr: np.ndarray, indices: np.ndarray, relation: np.ndarray, weights: np.ndarray | None) -> None:
    """Sort each row's arcs by (head, relation), a block of rows at a time."""
    num_nodes = indptr.shape[0] - 1
    row = 0
    while row < num_nodes:
        # the largest block of rows whose arcs fit in one sort (at least one row)
        end = int(np.searchsorted(indptr, indptr[row] + _SORT_ARCS, side="right")) - 1
        end = min(max(end, row + 1), num_nodes)
        lo, hi = int(indptr[row]), int(indptr[end])
        if hi - lo > 1:
            rows = np.repeat(np.arange(end - row, dtype=np.int64), np.diff(np.asarray(indptr[row : end + 1])))
            heads, rels = np.asarray(indices[lo:hi]), np.asarray(relation[lo:hi])
            span_heads, span_rels = num_nodes + 1, int(rels.max()) + 1
            if (end - row) * span_heads * span_rels < 2**62:  # one int64 key sorts several times faster
                order = np.argsort((rows * span_heads + heads) * span_rels + rels)
            else:
                order = np.lexsort((rels, heads, rows))
            indices[lo:hi] = indices[lo:hi][order]
            relation[lo:hi] = relation[lo:hi][order]
            if weights is not None:
                weights[lo:hi] = weights[lo:hi][order]
        row = end
