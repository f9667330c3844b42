"""A compact string-id -> dense-id dictionary for streaming import.

Where the compiled kernels are built, the keys below live in an open-addressing hash table in C
(one probe per id); without them, in the numpy-only structure described here.

Ids are never kept as Python strings. Each block's distinct ids (pyarrow's
dictionary_encode, in order of first appearance) are hashed to 128-bit keys straight from
the arrow buffers with vectorised numpy (a tabulation-polynomial hash, two independent
64-bit halves), and looked up in a log-structured set of sorted key arrays: new keys form
a small sorted level, and levels merge when a level reaches a quarter of the one below,
so there are O(log n) levels and every key is merged O(log n) times. That is 24 bytes per
entity (a Python dict of str takes ~100), no compiled code, and lookups run as sorted
searches over whole blocks.

Two different ids whose 64-bit first halves collide (likely somewhere past a few billion
ids) are told apart by the second half: the later one lives in a small overflow map. Two
ids with equal 128-bit keys would be merged; for a billion ids the chance is below 1e-20.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_TABLES = np.random.default_rng(0x5A4D).integers(0, 2**63, size=(2, 256), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_MULTIPLIERS = (np.uint64(0x9E3779B185EBCA87), np.uint64(0xC2B2AE3D27D4EB4F))
_MERGE_RATIO = 4
_HASH_SLICE_BYTES = 1 << 20
_compiled_hash = True  # hash_strings through the compiled kernel where it is built (tests compare both)


def _fmix64(h: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser (avalanche), in place."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def _powers(multiplier: np.uint64, length: int) -> np.ndarray:
    out = np.empty(length, dtype=np.uint64)
    value = np.uint64(1)
    with np.errstate(over="ignore"):
        for i in range(length):
            out[i] = value
            value = value * multiplier
    return out


_POWERS: list[np.ndarray] = [_powers(m, 256) for m in _MULTIPLIERS]


def string_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) numpy views of an arrow string array, zero-copy, offsets rebased to data."""
    if array.null_count:
        raise ValueError("string array with nulls")
    if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type):
        offset_type: type[np.signedinteger] = np.int64
    elif pa.types.is_string(array.type) or pa.types.is_binary(array.type):
        offset_type = np.int32
    else:
        raise TypeError(f"expected a string array, got {array.type}")
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[array.offset : array.offset + len(array) + 1]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    data = data[offsets[0] : offsets[-1]]
    return offsets - offsets[0], data


def hash_strings(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of every (non-empty) string of an arrow array."""
    offsets, data = string_buffers(array)
    lengths = np.diff(offsets)
    if len(lengths) and lengths.min() == 0:
        raise ValueError("empty strings cannot be hashed")
    from shardgraph.utils.kernels import kernels

    library = kernels()
    if library is not None and _compiled_hash:  # the same sums in one compiled pass
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        data = np.ascontiguousarray(data)
        out = (np.empty(len(lengths), np.uint64), np.empty(len(lengths), np.uint64))
        library.hash_strings_u64(offsets.ctypes.data, data.ctypes.data, len(lengths), _TABLES.ctypes.data,
                                 int(_MULTIPLIERS[0]), int(_MULTIPLIERS[1]), out[0].ctypes.data, out[1].ctypes.data)
        return out
    longest = int(lengths.max()) if len(lengths) else 0
    global _POWERS
    if longest > len(_POWERS[0]):
        _POWERS = [_powers(m, max(longest, 2 * len(_POWERS[0]))) for m in _MULTIPLIERS]
    out = (np.empty(len(lengths), np.uint64), np.empty(len(lengths), np.uint64))
    # slices of at most ~1 MiB of id bytes keep the 8-byte-per-byte temporaries small
    row = 0
    while row < len(lengths):
        end = int(np.searchsorted(offsets, offsets[row] + _HASH_SLICE_BYTES, side="right")) - 1
        end = min(len(lengths), max(end, row + 1))
        _hash_slice(offsets[row : end + 1], data, lengths[row:end], out, row)
        row = end
    return out


def _hash_slice(offsets: np.ndarray, data: np.ndarray, lengths: np.ndarray,
                out: tuple[np.ndarray, np.ndarray], row: int) -> None:
    part = data[offsets[0] : offsets[-1]]
    starts = offsets[:-1] - offsets[0]
    position = np.arange(len(part), dtype=np.int64)
    position -= np.repeat(starts, lengths)
    with np.errstate(over="ignore"):
        for half, (table, powers, multiplier) in enumerate(zip(_TABLES, _POWERS, _MULTIPLIERS, strict=True)):
            terms = table[part]
            terms *= powers[position]
            h = np.add.reduceat(terms, starts)
            h ^= lengths.astype(np.uint64) * multiplier
            out[half][row : row + len(lengths)] = _fmix64(h)


class _Level:
    """Sorted keys (by first half) and their ids."""

    __slots__ = ("first", "ids", "second")

    def __init__(self, first: np.ndarray, second: np.ndarray, ids: np.ndarray) -> None:
        self.first, self.second, self.ids = first, second, ids

    def __len__(self) -> int:
        return len(self.first)


class _HashTable:
    """The keys in an open-addressing hash table of the compiled kernels (idmap_lookup in _kernels.c): one
    probe per id. 20 bytes a slot, at most 3/4 of them used (27-53 bytes an entity); the table doubles
    when a block could fill it past that."""

    def __init__(self, library: Any) -> None:
        self.library = library
        self.count = 0
        self._allocate(1 << 16)

    def _allocate(self, capacity: int) -> None:
        self.first = np.empty(capacity, np.uint64)
        self.second = np.empty(capacity, np.uint64)
        self.ids = np.full(capacity, 0xFFFFFFFF, np.uint32)

    @property
    def nbytes(self) -> int:
        return self.first.nbytes + self.second.nbytes + self.ids.nbytes

    def _reserve(self, more: int) -> None:
        capacity = len(self.ids)
        while (self.count + more) * 4 > capacity * 3:
            capacity *= 2
        if capacity == len(self.ids):
            return
        old = (self.first, self.second, self.ids)
        self._allocate(capacity)
        self.library.idmap_rehash(old[0].ctypes.data, old[1].ctypes.data, old[2].ctypes.data, len(old[2]),
                                  self.first.ctypes.data, self.second.ctypes.data, self.ids.ctypes.data, capacity)

    def lookup(self, array: pa.Array, insert: bool) -> tuple[np.ndarray, pa.Array]:
        first, second = hash_strings(array)
        if insert:
            if self.count + len(array) >= 0xFFFFFFFF:
                raise ValueError("more than 2^32 - 1 distinct ids of one type")
            self._reserve(len(array))
        out = np.empty(len(array), np.int64)
        new_rows = np.empty(len(array) if insert else 0, np.int64)
        added = self.library.idmap_lookup(self.first.ctypes.data, self.second.ctypes.data, self.ids.ctypes.data,
                                          len(self.ids), first.ctypes.data, second.ctypes.data, len(array),
                                          int(insert), self.count, out.ctypes.data, new_rows.ctypes.data)
        self.count += added
        return out, array.take(pa.array(new_rows[:added])) if added else array.slice(0, 0)


class StringIdTable:
    """Dense ids for strings, assigned in order of first appearance: a compiled hash table where the C kernels
    are built (`compiled`, the default), the sorted levels of this module (numpy only) otherwise. Both give
    the same ids."""

    def __init__(self, compiled: bool = True) -> None:
        from shardgraph.utils.kernels import kernels

        library = kernels() if compiled else None
        self.hashed = _HashTable(library) if library is not None else None
        self.levels: list[_Level] = []
        self.overflow: dict[tuple[int, int], int] = {}
        self._count = 0

    @property
    def count(self) -> int:
        return self.hashed.count if self.hashed is not None else self._count

    @count.setter
    def count(self, value: int) -> None:
        self._count = value

    @property
    def nbytes(self) -> int:
        if self.hashed is not None:
            return self.hashed.nbytes
        return sum(lv.first.nbytes + lv.second.nbytes + lv.ids.nbytes for lv in self.levels)

    def _find(self, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ids of keys sorted by `first` (-1 if absent), and a mask of keys whose first half exists
        with another second half. Sorted queries make the binary searches walk each level forward."""
        ids = np.full(len(first), -1, dtype=np.int64)
        clash = np.zeros(len(first), dtype=bool)
        for level in self.levels:
            pos = np.searchsorted(level.first, first)
            np.minimum(pos, len(level) - 1, out=pos)
            same_first = level.first[pos] == first
            match = same_first & (level.second[pos] == second)
            ids[match] = level.ids[pos[match]]
            clash |= same_first & ~match
        if self.overflow and clash.any():
            for i in np.flatnonzero(clash & (ids < 0)):
                found = self.overflow.get((int(first[i]), int(second[i])))
                if found is not None:
                    ids[i] = found
        return ids, clash & (ids < 0)

    def _add(self, first: np.ndarray, second: np.ndarray, ids: np.ndarray, clash: np.ndarray) -> None:
        """Insert new keys; keys whose first half is taken go to the overflow map."""
        order = np.argsort(first, kind="stable")
        first, second, ids, clash = first[order], second[order], ids[order], clash[order]
        duplicate_first = np.zeros(len(first), dtype=bool)
        duplicate_first[1:] = first[1:] == first[:-1]
        to_overflow = clash | duplicate_first
        for i in np.flatnonzero(to_overflow):
            self.overflow[(int(first[i]), int(second[i]))] = int(ids[i])
        keep = ~to_overflow
        self.levels.append(_Level(first[keep], second[keep], ids[keep]))
        while len(self.levels) > 1 and len(self.levels[-1]) * _MERGE_RATIO >= len(self.levels[-2]):
            self._merge_last_two()

    def _merge_last_two(self) -> None:
        upper, lower = self.levels.pop(), self.levels.pop()
        first = np.concatenate([lower.first, upper.first])
        order = np.argsort(first, kind="stable")  # two sorted runs: a linear merge
        merged_first = first[order]
        del first
        merged_second = np.concatenate([lower.second, upper.second])[order]
        merged_ids = np.concatenate([lower.ids, upper.ids])[order]
        self.levels.append(_Level(merged_first, merged_second, merged_ids))

    def lookup(self, array: pa.Array, insert: bool) -> tuple[np.ndarray, pa.Array]:
        """Ids of the strings in `array` (int64; -1 = unknown when not inserting), and the new
        strings in the order they got their ids (count_before, count_before + 1, ...): the
        order of their first appearance in `array`."""
        if len(array) == 0:
            return np.zeros(0, np.int64), array
        if self.hashed is not None:
            return self.hashed.lookup(array, insert)
        first, second = hash_strings(array)
        unique_first, first_row, inverse = np.unique(first, return_index=True, return_inverse=True)
        unique_second = second[first_row]
        if (unique_second[inverse] != second).any():
            return self._lookup_slow(array, first, second, insert)
        ids, clash = self._find(unique_first, unique_second)
        new = np.flatnonzero(ids < 0)
        if not insert or len(new) == 0:
            return ids[inverse], array.slice(0, 0)
        new = new[np.argsort(first_row[new])]
        new_ids = np.arange(self.count, self.count + len(new), dtype=np.int64)
        ids[new] = new_ids
        self._add(unique_first[new], unique_second[new], new_ids, clash[new])
        self.count += len(new)
        return ids[inverse], array.take(pa.array(first_row[new]))

    def _lookup_slow(self, array: pa.Array, first: np.ndarray, second: np.ndarray,
                     insert: bool) -> tuple[np.ndarray, pa.Array]:
        """Row by row: for the (astronomically rare) block holding two ids with equal first halves."""
        out = np.empty(len(array), dtype=np.int64)
        new_rows: list[int] = []
        for row in range(len(array)):
            ids, clash = self._find(first[row : row + 1], second[row : row + 1])
            if ids[0] < 0 and insert:
                ids[0] = self.count
                self._add(first[row : row + 1], second[row : row + 1], ids.copy(), clash)
                self.count += 1
                new_rows.append(row)
            out[row] = ids[0]
        return out, array.take(pa.array(new_rows, type=pa.int64()))
