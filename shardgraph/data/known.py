"""The known edges of a dataset (train, valid and test), indexed for filtered ranking, out of core.

Filtered evaluation and `predict` ask, for a batch of (known end, relation) pairs, every id
of the other end that forms a known edge. The index answers from sorted files memory-mapped
from the dataset directory, one per partition of the known end, so that neither building
nor querying it needs the edge list in memory:

    DATASET/known/meta.json                      what it was built from
    DATASET/known/<predict>/part_<p>.keys.npy    (k,) sorted distinct keys: known global id * R + relation
    DATASET/known/<predict>/part_<p>.starts.npy  (k + 1,) where each key's ids start in `other`
    DATASET/known/<predict>/part_<p>.other.npy   the other end's distinct global ids, sorted per key

a CSR per partition of the known end, each array in the narrowest integer type that holds it
(int32 below 2^31): at 308M edges, 2.9 GB for both directions, against 9.8 GB for a sorted
(key, id) pair of int64 per edge (format 1).

`predict` is "rhs" (known end = lhs, files per lhs bucket index) or "lhs" (known end = rhs).
Building reads the buckets of one partition of the known end at a time (all splits) and sorts
them: memory is bounded by the largest partition's edges (16 bytes each), not by the graph.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from shardgraph.data.dataset import LHS, REL, RHS, SPLITS, Dataset
from shardgraph.data.derived import is_current, source_key
from shardgraph.utils.arrays import unique_sorted
from shardgraph.utils.atomic import atomic_directory

log = logging.getLogger(__name__)

KNOWN_FORMAT_VERSION = 2
DIRECTIONS = ("rhs", "lhs")


class KnownEdges:
    """Lookups of the known edges of one direction (predict "rhs": known end lhs; "lhs": known end rhs)."""

    def __init__(self, dataset: Dataset, predict: str, directory: Path) -> None:
        if predict not in DIRECTIONS:
            raise ValueError(f"predict must be rhs or lhs, not {predict!r}")
        self.num_relations = len(dataset.relations)
        types = dataset.entity_types
        known_side = [r.lhs if predict == "rhs" else r.rhs for r in dataset.relations]
        # the bucket index of a known id: its partition for a partitioned type, 0 otherwise
        self._offsets = [types[t].offsets if types[t].partitions > 1 else None for t in known_side]
        self._directory, self._predict, self._parts = directory / predict, predict, dataset.num_partitions
        for p in range(self._parts):  # all there and readable, before the first query
            self._maps(p)

    def _maps(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Memory maps of one partition's key, start and id files, opened per lookup and dropped after
        it: maps kept open would keep every page a long ranking pass touched counted in the process's
        memory (PSS), up to the whole index."""
        return tuple(np.load(self._directory / f"part_{p}.{name}.npy", mmap_mode="r")
                     for name in ("keys", "starts", "other"))

    def _bucket_index(self, known: np.ndarray, rel: np.ndarray) -> np.ndarray:
        index = np.zeros(len(known), dtype=np.int64)
        for r in np.unique(rel):
            offsets = self._offsets[int(r)]
            if offsets is not None:
                rows = rel == r
                index[rows] = np.searchsorted(offsets, known[rows], side="right") - 1
        return index

    def lookup(self, known: np.ndarray, rel: np.ndarray, lo: int | None = None,
               hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(row, other id) pairs of every known edge of each (known[row], rel[row]), rows ascending.

        known, rel: (n,) global ids of the known end's type and relation ids. With `lo`/`hi`, only
        the other ids in [lo, hi): a hub's thousands of known edges are cut to one partition's
        share before anything is copied (the ids of a key are sorted, so a binary search finds it).
        """
        known = np.asarray(known, dtype=np.int64)
        rel = np.asarray(rel, dtype=np.int64)
        keys = known * self.num_relations + rel
        bucket = self._bucket_index(known, rel)
        found_rows, found_other = [], []
        for p in np.unique(bucket):
            if p >= self._parts:  # ids beyond the dataset (entities added after training): no known edges
                continue
            rows = np.flatnonzero(bucket == p)
            sorted_keys, starts, other = self._maps(int(p))
            position = np.searchsorted(sorted_keys, keys[rows])
            found = position < len(sorted_keys)
            found[found] = sorted_keys[position[found]] == keys[rows[found]]
            start = np.zeros(len(rows), dtype=np.int64)
            stop = np.zeros(len(rows), dtype=np.int64)
            start[found] = starts[position[found]]
            stop[found] = starts[position[found] + 1]
            if lo is not None:
                start = _search_runs(other, start, stop, lo)
            if hi is not None:
                stop = _search_runs(other, start, stop, hi)
            counts = stop - start
            total = int(counts.sum())
            if total == 0:
                continue
            first = np.repeat(start - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
            found_rows.append(np.repeat(rows, counts))
            found_other.append(np.asarray(other[first + np.arange(total)], dtype=np.int64))
        if not found_rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        all_rows, all_other = np.concatenate(found_rows), np.concatenate(found_other)
        order = np.argsort(all_rows, kind="stable")
        return all_rows[order], all_other[order]


def _search_runs(values: np.ndarray, start: np.ndarray, stop: np.ndarray, target: int) -> np.ndarray:
    """For each sorted run values[start[i]:stop[i]], the first position whose value is >= target
    (stop[i] if none): one vectorised binary search over all runs, reading O(n log run) values."""
    low, high = start.copy(), stop.copy()
    while True:
        active = low < high
        if not active.any():
            return low
        mid = (low + high) // 2
        probe = np.flatnonzero(active)
        below = np.asarray(values[mid[probe]]) < target
        low[probe[below]] = mid[probe[below]] + 1
        high[probe[~below]] = mid[probe[~below]]


def known_directory(dataset: Dataset) -> Path:
    return dataset.path / "known"


def load_known_edges(dataset: Dataset, predict: str, progress: bool = True) -> KnownEdges:
    """The index of one direction, built on first use (or when the dataset changed; with `progress`,
    a progress bar on a terminal while it is built)."""
    directory = known_directory(dataset)
    source = source_key(dataset, SPLITS)
    if not is_current(directory, source, KNOWN_FORMAT_VERSION):
        build_known_edges(dataset, directory, source, progress=progress)
    return KnownEdges(dataset, predict, directory)


def build_known_edges(dataset: Dataset, directory: Path, source: str, progress: bool = True) -> None:
    """Write the sorted key files of both directions, one partition of the known end at a time."""
    types = dataset.entity_types
    relations = dataset.relations
    num_relations = len(relations)

    def offsets_of(side: str, bucket_index: int) -> np.ndarray:
        """(R,) global id of local id 0 of the bucket's partition of each relation's `side` type."""
        return np.array([types[getattr(r, side)].offsets[bucket_index if types[getattr(r, side)].partitions > 1
                                                           else 0] for r in relations], dtype=np.int64)

    log.info("indexing the known edges of %s for filtered ranking", dataset.path)
    total = sum(info.edges for split in SPLITS for info in dataset.buckets(split))
    with tqdm(total=total * len(DIRECTIONS), unit=" edges", unit_scale=True, desc="index known edges",
              disable=None if progress else True, mininterval=1) as bar, \
            atomic_directory(directory, overwrite=True) as temp:
        for predict in DIRECTIONS:
            (temp / predict).mkdir()
            for p in range(dataset.num_partitions):
                keys, others = [], []
                for split in SPLITS:
                    for info in dataset.buckets(split):
                        if (info.lhs if predict == "rhs" else info.rhs) != p:
                            continue
                        edges = np.asarray(dataset.bucket_edges(split, info.lhs, info.rhs), dtype=np.int64)
                        rel = edges[:, REL]
                        lhs_off, rhs_off = offsets_of("lhs", info.lhs), offsets_of("rhs", info.rhs)
                        lhs_global, rhs_global = edges[:, LHS] + lhs_off[rel], edges[:, RHS] + rhs_off[rel]
                        known, other = (lhs_global, rhs_global) if predict == "rhs" else (rhs_global, lhs_global)
                        keys.append(known * num_relations + rel)
                        others.append(other)
                        bar.update(len(edges))
                key, other = _distinct_pairs(np.concatenate(keys) if keys else np.zeros(0, np.int64),
                                             np.concatenate(others) if others else np.zeros(0, np.int64))
                first = np.flatnonzero(np.diff(key, prepend=-1)) if len(key) else np.zeros(0, np.int64)
                starts = np.append(first, len(key))
                np.save(temp / predict / f"part_{p}.keys.npy", _narrow(key[first]))
                np.save(temp / predict / f"part_{p}.starts.npy", _narrow(starts))
                np.save(temp / predict / f"part_{p}.other.npy", _narrow(other))
        (temp / "meta.json").write_text(json.dumps({"format_version": KNOWN_FORMAT_VERSION, "source": source,
                                                    "partitions": dataset.num_partitions}))


def _narrow(values: np.ndarray) -> np.ndarray:
    """int32 where every value fits (ids and offsets below 2^31), int64 otherwise."""
    if len(values) == 0 or int(values.max()) < 2**31:
        return values.astype(np.int32)
    return values


def _distinct_pairs(key: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (key, other) pairs sorted by key then other (a multi-edge is one pair).

    Both fit one int64 (key * (max other + 1) + other) in every graph below 2^63 / ids: one sort of
    that, several times faster than a lexsort of the two; the lexsort otherwise."""
    if len(key) == 0:
        return key, other
    span = int(other.max()) + 1
    if int(key.max()) < (2**63 - 1) // span:
        combined = unique_sorted(key * span + other)
        return combined // span, combined % span
    order = np.lexsort((other, key))
    key, other = key[order], other[order]
    keep = np.ones(len(key), dtype=bool)
    keep[1:] = (np.diff(key) != 0) | (np.diff(other) != 0)
    return key[keep], other[keep]
