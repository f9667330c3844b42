"""The walks of shardgraph/_walks.c, step for step in Python: the fallback where the C walker was not
built (correct, and the same walks for the same seed, but about a thousand times slower), and the
reference the tests hold the compiled walker to."""

from __future__ import annotations

import numpy as np

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


class _Stream:
    """splitmix64, as in the C file."""

    def __init__(self, seed: int, walk_id: int) -> None:
        self.state = (seed ^ 0xD1B54A32D192ED03) & MASK
        mixed = self.next()
        self.state = (mixed ^ ((walk_id * GOLDEN) & MASK)) & MASK
        self.next()

    def next(self) -> int:
        self.state = (self.state + GOLDEN) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def uniform(self) -> float:
        return float(self.next() >> 11) * 2.0**-53

    def below(self, n: int) -> int:
        return min(int(self.uniform() * float(n)), n - 1)


def reference_walks(indptr: np.ndarray, indices: np.ndarray, arc_relation: np.ndarray, weights: np.ndarray | None,
                    row_max: np.ndarray | None, starts: np.ndarray, walk_ids: np.ndarray, walk_length: int,
                    p: float, q: float, seed: int, metapath_relations: np.ndarray | None,
                    metapath_next_types: np.ndarray | None, type_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walks (B, walk_length) int64, -1 after each walk's end, and lengths (B,); see sg_random_walks."""
    inv_p, inv_q = 1.0 / p, 1.0 / q
    bound = max(inv_p, 1.0, inv_q)
    first_order = inv_p == 1.0 and inv_q == 1.0
    steps = 0 if metapath_relations is None else len(metapath_relations)
    indptr_list = indptr.tolist()
    out = np.full((len(starts), walk_length), -1, dtype=np.int64)
    lengths = np.zeros(len(starts), dtype=np.int64)

    def is_neighbour(node: int, x: int) -> bool:
        lo, hi = indptr_list[node], indptr_list[node + 1]
        at = lo + int(np.searchsorted(indices[lo:hi], x))
        return at < hi and int(indices[at]) == x

    def weight(arc: int) -> float:
        return 1.0 if weights is None else float(weights[arc])

    for w in range(len(starts)):
        stream = _Stream(seed, int(walk_ids[w]))
        node, prev, n = int(starts[w]), -1, 1
        out[w, 0] = node
        while n < walk_length:
            begin, end = indptr_list[node], indptr_list[node + 1]
            if begin == end:
                break
            arc = -1
            if steps:
                assert metapath_relations is not None and metapath_next_types is not None
                step = (n - 1) % steps
                next_type, relation = int(metapath_next_types[step]), int(metapath_relations[step])
                lo = begin + int(np.searchsorted(indices[begin:end], type_offsets[next_type]))
                hi = begin + int(np.searchsorted(indices[begin:end], type_offsets[next_type + 1]))
                matches = [a for a in range(lo, hi) if relation < 0 or int(arc_relation[a]) == relation]
                total = sum(weight(a) for a in matches)
                if total <= 0.0:
                    break
                target, seen = stream.uniform() * total, 0.0
                for a in matches:
                    seen += weight(a)
                    arc = a
                    if target < seen:
                        break
            elif first_order or prev < 0:
                while True:
                    arc = begin + stream.below(end - begin)
                    if weights is None:
                        break
                    assert row_max is not None
                    if stream.uniform() * float(row_max[node]) < weight(arc):
                        break
            else:
                while True:
                    arc = begin + stream.below(end - begin)
                    x = int(indices[arc])
                    bias = inv_p if x == prev else 1.0 if is_neighbour(prev, x) else inv_q
                    scale = bound
                    if weights is not None:
                        assert row_max is not None
                        bias *= weight(arc)
                        scale *= float(row_max[node])
                    if stream.uniform() * scale < bias:
                        break
            prev, node = node, int(indices[arc])
            out[w, n] = node
            n += 1
        lengths[w] = n
    return out, lengths
