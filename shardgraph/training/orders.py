"""Bucket orders: in which sequence an epoch visits the buckets (i, j) of a P_lhs × P_rhs grid.

An order decides only the sequence; the trainer loads whatever partitions a bucket needs.
Partition labels are shuffled per epoch by the seeded generator (as PyTorch-BigGraph does)
so no partition is always first. `beta` minimises partition loads for a buffer of
`buffer` partitions (Marius' BETA ordering); the others assume two partitions in memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from shardgraph.registry import Registry

Bucket = tuple[int, int]
OrderFn = Callable[[int, int, np.random.Generator, int], list[Bucket]]
BUCKET_ORDERS: Registry[OrderFn] = Registry("bucket order")


def _relabel(buckets: list[Bucket], n_lhs: int, n_rhs: int, rng: np.random.Generator) -> list[Bucket]:
    """Apply one random permutation of partition labels (shared by both sides when square)."""
    perm = rng.permutation(max(n_lhs, n_rhs))
    lhs_perm = perm if n_lhs > 1 else np.zeros(1, dtype=int)
    rhs_perm = perm if n_rhs > 1 else np.zeros(1, dtype=int)
    if n_lhs != n_rhs and n_lhs > 1 and n_rhs > 1:
        lhs_perm, rhs_perm = rng.permutation(n_lhs), rng.permutation(n_rhs)
    return [(int(lhs_perm[i]), int(rhs_perm[j])) for i, j in buckets]


@BUCKET_ORDERS.register("sequential")
def sequential_order(n_lhs: int, n_rhs: int, rng: np.random.Generator, buffer: int = 2) -> list[Bucket]:
    """Row-major, no shuffling."""
    return [(i, j) for i in range(n_lhs) for j in range(n_rhs)]


@BUCKET_ORDERS.register("random")
def random_order(n_lhs: int, n_rhs: int, rng: np.random.Generator, buffer: int = 2) -> list[Bucket]:
    buckets = sequential_order(n_lhs, n_rhs, rng, buffer)
    return [buckets[k] for k in rng.permutation(len(buckets))]


def _inside_out(n_lhs: int, n_rhs: int) -> list[Bucket]:
    """Layers of growing max(i, j); inside a layer alternate (k, q) and (q, k) so that
    consecutive buckets share a partition."""
    out: list[Bucket] = []
    for k in range(max(n_lhs, n_rhs)):
        layer: list[Bucket] = []
        for q in range(k + 1):
            for bucket in ((k, q), (q, k)):
                if bucket[0] < n_lhs and bucket[1] < n_rhs and bucket not in layer:
                    layer.append(bucket)
        out.extend(layer)
    return out


@BUCKET_ORDERS.register("inside_out")
def inside_out_order(n_lhs: int, n_rhs: int, rng: np.random.Generator, buffer: int = 2) -> list[Bucket]:
    """Start from one partition pair and grow outwards: every bucket after the first touches a
    partition trained earlier in the epoch, which keeps partitions in one embedding space."""
    return _relabel(_inside_out(n_lhs, n_rhs), n_lhs, n_rhs, rng)


@BUCKET_ORDERS.register("outside_in")
def outside_in_order(n_lhs: int, n_rhs: int, rng: np.random.Generator, buffer: int = 2) -> list[Bucket]:
    return _relabel(_inside_out(n_lhs, n_rhs)[::-1], n_lhs, n_rhs, rng)


@BUCKET_ORDERS.register("affinity")
def affinity_order(n_lhs: int, n_rhs: int, rng: np.random.Generator, buffer: int = 2) -> list[Bucket]:
    """Greedy: next is a random bucket among those sharing the most partitions with the current one."""
    remaining = set(sequential_order(n_lhs, n_rhs, rng, buffer))
    current = (int(rng.integers(n_lhs)), int(rng.integers(n_rhs)))
    out = [current]
    remaining.discard(current)
    while remaining:
        def affinity(b: Bucket, c: Bucket = current) -> int:
            return int(b[0] == c[0]) + int(b[1] == c[1]) + int(b[0] == c[1]) + int(b[1] == c[0])

        candidates = sorted(remaining)
        scores = np.array([affinity(b) for b in candidates])
        best = [b for b, s in zip(candidates, scores, strict=True) if s == scores.max()]
        current = best[int(rng.integers(len(best)))]
        out.append(current)
        remaining.discard(current)
    return out


def partition_loads(order: list[Bucket], buffer: int, square: bool = True) -> int:
    """Partition loads an order costs with a buffer of `buffer` slots, evicting the partition
    whose next use is furthest away (Belady, optimal for a fixed order)."""
    needs = [{("p", i), ("p", j)} if square else {("l", i), ("r", j)} for i, j in order]
    resident: set[tuple[str, int]] = set()
    loads = 0
    for step, need in enumerate(needs):
        for part in need - resident:
            if len(resident) >= buffer:
                def next_use(p: tuple[str, int], step: int = step) -> int:
                    for later in range(step + 1, len(needs)):
                        if p in needs[later]:
                            return later
                    return len(needs) + 1

                evictable = sorted(resident - need, key=next_use)
                resident.discard(evictable[-1])
            resident.add(part)
            loads += 1
    return loads


def lower_bound_loads(partitions: int, buffer: int) -> int:
    """A lower bound on partition loads to visit all P² buckets with a buffer of c slots
    (P square partitions): each new partition loaded while c-1 others are resident can cover
    at most 2(c-1)+1 new buckets, and the first c partitions cover c² buckets."""
    p, c = partitions, min(buffer, partitions)
    if c >= p:
        return p
    remaining = p * p - c * c
    return c + -(-remaining // (2 * (c - 1) + 1))


def _beta(p: int, c: int) -> list[Bucket]:
    """BETA ordering (Mohoney et al., Marius, 2021): keep c-1 partitions fixed while the last
    slot cycles through all partitions not yet paired with them; then replace the fixed set.

    Each swap of the cycling slot brings in one partition and covers all its unvisited
    buckets with the resident ones, which is within a small factor of the lower bound.
    """
    if c >= p:
        return [(i, j) for i in range(p) for j in range(p)]
    visited: set[Bucket] = set()
    out: list[Bucket] = []

    def visit(resident: list[int]) -> None:
        for i in resident:
            for j in resident:
                if (i, j) not in visited:
                    visited.add((i, j))
                    out.append((i, j))

    partitions = list(range(p))
    groups = [partitions[k : k + c - 1] for k in range(0, p, c - 1)]
    for g_index, fixed in enumerate(groups):
        others = [q for later in groups[g_index + 1 :] for q in later]
        if not others:
            visit(fixed)
            continue
        for q in others:
            visit([*fixed, q])
    # buckets inside a trailing group smaller than the buffer are covered above; any left (only
    # possible for degenerate sizes) are appended in an order that keeps partitions together
    for i, j in itertools.product(range(p), repeat=2):
        if (i, j) not in visited:
            visited.add((i, j))
            out.append((i, j))
    return out


@BUCKET_ORDERS.register("beta")
def beta_order(n_lhs: int, n_rhs: int, rng: np.random.Generator, buffer: int = 2) -> list[Bucket]:
    """Swap-minimising order for a buffer of `buffer` partitions (square P×P grids)."""
    if n_lhs != n_rhs:
        return inside_out_order(n_lhs, n_rhs, rng, buffer)
    return _relabel(_beta(n_lhs, max(2, buffer)), n_lhs, n_rhs, rng)


def bucket_order(name: str, n_lhs: int, n_rhs: int, seed: int, epoch: int, buffer: int = 2) -> list[Bucket]:
    """The order of an epoch; the same (seed, epoch) always gives the same order."""
    rng = np.random.default_rng([seed, epoch, 0xB0C])
    return BUCKET_ORDERS.get(name)(n_lhs, n_rhs, rng, buffer)
