"""Skip-gram (centre, context) pairs of a block of walks, within word2vec's (shrunk) window."""

from __future__ import annotations

import numpy as np

from shardgraph.walks.kernels import walk_kernels


def window_pairs(walks: np.ndarray, lengths: np.ndarray, window: int, shrink: bool,
                 rng: np.random.Generator, both_directions: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(centre, context) node ids, each (M,) int64, of walks (B, L) (-1 after each walk's end).

    Node j is a context of centre i in the same walk when 0 < |i - j| <= w_i, where w_i = window,
    or with `shrink` (word2vec) w_i drawn uniformly from 1..window for every centre. Without
    `both_directions`, only the contexts after their centre (j > i) are kept: for a trainer that
    learns both directions of every edge this is the same objective in expectation, at half the edges.
    The compiled walker draws the windows from its own stream (seeded from `rng`): the same pairs
    for the same seed, not the same as the numpy fallback's.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1. Got {window} instead.")
    if walk_kernels() is not None:
        room = _pair_room(lengths, window, both_directions)
        centre, context = np.empty(room, dtype=np.int64), np.empty(room, dtype=np.int64)
        count = _compiled_pairs(walks, lengths, window, shrink, both_directions, rng, centre, context, None)
        return centre[:count], context[:count]
    batch, length = walks.shape
    if shrink:
        reach = rng.integers(1, window + 1, size=(batch, length), dtype=np.int16)
    else:
        reach = np.full((batch, length), window, dtype=np.int16)
    inside = np.arange(length)[None, :] < lengths[:, None]
    centres: list[np.ndarray] = []
    contexts: list[np.ndarray] = []
    for distance in range(1, min(window, length - 1) + 1):
        both = inside[:, distance:]  # positions i and i + distance are both in the walk
        left, right = walks[:, :-distance], walks[:, distance:]
        forward = both & (reach[:, :-distance] >= distance)  # centre i, context i + distance
        centres.append(left[forward])
        contexts.append(right[forward])
        if both_directions:
            backward = both & (reach[:, distance:] >= distance)  # centre i + distance, context i
            centres.append(right[backward])
            contexts.append(left[backward])
    if not centres:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    return np.concatenate(centres), np.concatenate(contexts)


def window_rows(walks: np.ndarray, lengths: np.ndarray, window: int, shrink: bool, rng: np.random.Generator,
                both_directions: bool, out: np.ndarray | None) -> np.ndarray:
    """window_pairs written straight into edge rows (centre, 0, context) (M, 3) int32, for a graph of one
    entity type and partition; `out` (reused between blocks) is used where it has room. Needs the
    compiled walker (see walk_kernels)."""
    room = _pair_room(lengths, window, both_directions)
    rows = out if out is not None and len(out) >= room else np.empty((room, 3), dtype=np.int32)
    return rows[: _compiled_pairs(walks, lengths, window, shrink, both_directions, rng, None, None, rows)]


def _pair_room(lengths: np.ndarray, window: int, both_directions: bool) -> int:
    """The most pairs a block of walks can give."""
    return int(np.sum(lengths)) * window * (2 if both_directions else 1)


def _compiled_pairs(walks: np.ndarray, lengths: np.ndarray, window: int, shrink: bool, both_directions: bool,
                    rng: np.random.Generator, centre: np.ndarray | None, context: np.ndarray | None,
                    rows: np.ndarray | None) -> int:
    """sg_window_pairs (shardgraph/_walks.c) into centre / context, or into rows; returns the pair count."""
    library = walk_kernels()
    assert library is not None
    walks = np.ascontiguousarray(walks, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    pointer = lambda a: None if a is None else a.ctypes.data  # noqa: E731
    return int(library.sg_window_pairs(walks.ctypes.data, lengths.ctypes.data, walks.shape[0], walks.shape[1],
                                       window, int(shrink), int(both_directions), int(rng.integers(2**63)),
                                       pointer(centre), pointer(context), pointer(rows)))


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """word2vec's subsampling of frequent nodes: (N,) probability of keeping an occurrence of each node,
    min(1, (sqrt(f / t) + 1) * t / f) for a node seen f times in the walks, t = sample * all occurrences."""
    threshold = sample * float(counts.sum())
    keep = np.ones(len(counts), dtype=np.float64)
    seen = counts > 0
    frequency = counts[seen].astype(np.float64)
    keep[seen] = np.minimum(1.0, (np.sqrt(frequency / threshold) + 1.0) * threshold / frequency)
    return keep


def subsample(walks: np.ndarray, lengths: np.ndarray, keep: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Walks (B, L) with each occurrence of node v dropped with probability 1 - keep[v] (the others close
    up, so windows reach further, as in word2vec); returns the new walks (-1 padded) and lengths (B,)."""
    inside = walks >= 0
    kept = inside & (rng.random(walks.shape) < keep[np.where(inside, walks, 0)])
    order = np.argsort(~kept, axis=1, kind="stable")  # kept positions first, in walk order
    out = np.take_along_axis(walks, order, axis=1)
    new_lengths = kept.sum(axis=1)
    out[np.arange(walks.shape[1])[None, :] >= new_lengths[:, None]] = -1
    return out, new_lengths.astype(lengths.dtype)
