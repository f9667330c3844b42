"""A compact string-id -> dense-id dictionary for streaming import.

Ids are never kept as Python strings: each id is hashed (two independent 64-bit hashes,
i.e. a 128-bit key) straight from the arrow buffers by a compiled loop, and an
open-addressing table maps the key to the dense id. That is 24 bytes per slot, about
40 bytes per entity, against ~100 for a Python dict of str; and it runs at the speed of
the bytes. The strings themselves go to the dictionary files on disk as they are first
seen. The chance that two distinct ids share a 128-bit key is below 1e-18 for a billion
ids, which we accept.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa

EMPTY = -1
MAX_LOAD = 0.6

_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P5 = np.uint64(0x27D4EB2F165667C5)
_SEED_A = np.uint64(0x243F6A8885A308D3)
_SEED_B = np.uint64(0x13198A2E03707344)


@numba.njit(cache=True, inline="always")
def _rotl(x: np.uint64, r: int) -> np.uint64:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@numba.njit(cache=True, inline="always")
def _avalanche(h: np.uint64) -> np.uint64:
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h


@numba.njit(cache=True)
def hash_string(data: np.ndarray, start: int, end: int, seed: np.uint64) -> np.uint64:
    """64-bit hash of data[start:end] (xxHash-style byte rounds and avalanche)."""
    h = seed + _P5 + np.uint64(end - start)
    for i in range(start, end):
        h ^= np.uint64(data[i]) * _P5
        h = _rotl(h, 11) * _P1
    return _avalanche(h)


@numba.njit(cache=True)
def _lookup(
    slots: np.ndarray,
    count: int,
    limit: int,
    offsets: np.ndarray,
    data: np.ndarray,
    first_row: int,
    insert: bool,
    out: np.ndarray,
    new_rows: np.ndarray,
    n_new: int,
) -> tuple[int, int, int]:
    """Map strings first_row.. of an arrow (offsets, data) pair to their dense ids.

    `slots` is (capacity, 3) uint64: hash a, hash b, id + 1 (0 = empty slot), one cache
    line per probe. With `insert`, unknown strings get the next ids (in order of first
    appearance) and their rows go to new_rows; without it they map to -1. Stops early
    when `count` reaches `limit` so the caller can grow the table.
    Returns (next row to process, count, number of new strings).
    """
    mask = np.uint64(slots.shape[0] - 1)
    n_rows = offsets.shape[0] - 1
    row = first_row
    while row < n_rows:
        if count >= limit:
            break
        start = offsets[row]
        end = offsets[row + 1]
        ha = hash_string(data, start, end, _SEED_A)
        hb = np.uint64(0)
        have_b = False
        slot = ha & mask
        while True:
            value = slots[slot, 2]
            if value == np.uint64(0):
                if insert:
                    if not have_b:
                        hb = hash_string(data, start, end, _SEED_B)
                    slots[slot, 0] = ha
                    slots[slot, 1] = hb
                    slots[slot, 2] = np.uint64(count + 1)
                    out[row] = count
                    new_rows[n_new] = row
                    n_new += 1
                    count += 1
                else:
                    out[row] = EMPTY
                break
            if slots[slot, 0] == ha:
                if not have_b:
                    hb = hash_string(data, start, end, _SEED_B)
                    have_b = True
                if slots[slot, 1] == hb:
                    out[row] = np.int64(value) - 1
                    break
            slot = (slot + np.uint64(1)) & mask
        row += 1
    return row, count, n_new


@numba.njit(cache=True)
def _reinsert(old: np.ndarray, new: np.ndarray) -> None:
    mask = np.uint64(new.shape[0] - 1)
    for i in range(old.shape[0]):
        if old[i, 2] == 0:
            continue
        slot = old[i, 0] & mask
        while new[slot, 2] != 0:
            slot = (slot + np.uint64(1)) & mask
        new[slot, 0] = old[i, 0]
        new[slot, 1] = old[i, 1]
        new[slot, 2] = old[i, 2]


def string_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) numpy views of an arrow string array, zero-copy, slice offset applied."""
    if array.null_count:
        raise ValueError("string array with nulls")
    offset_type: type[np.signedinteger]
    if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type):
        offset_type = np.int64
    elif pa.types.is_string(array.type) or pa.types.is_binary(array.type):
        offset_type = np.int32
    else:
        raise TypeError(f"expected a string array, got {array.type}")
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


class StringIdTable:
    """Dense ids for strings, assigned in order of first appearance."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.slots = np.zeros((1 << max(4, int(capacity - 1).bit_length()), 3), dtype=np.uint64)
        self.count = 0

    @property
    def capacity(self) -> int:
        return int(self.slots.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.slots.nbytes)

    def _grow(self) -> None:
        old = self.slots
        self.slots = np.zeros((2 * old.shape[0], 3), dtype=np.uint64)
        _reinsert(old, self.slots)

    def lookup(self, array: pa.Array, insert: bool) -> tuple[np.ndarray, np.ndarray]:
        """Ids of the strings in `array` (int64, -1 = unknown when not inserting), and the rows
        where new strings first appeared (their ids are count_before, count_before + 1, ...)."""
        offsets, data = string_buffers(array)
        n = len(array)
        out = np.empty(n, dtype=np.int64)
        new_rows = np.empty(n if insert else 0, dtype=np.int64)
        row = n_new = 0
        while True:
            limit = int(MAX_LOAD * self.capacity) if insert else self.count + 1
            row, self.count, n_new = _lookup(self.slots, self.count, limit, offsets, data, row, insert,
                                             out, new_rows, n_new)
            if row >= n:
                return out, new_rows[:n_new]
            self._grow()
