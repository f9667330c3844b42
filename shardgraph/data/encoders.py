"""Feature encoders of node-table columns: one block of arrow strings in, rows of features out.

Sparse encoders (hash, multi_hot) give (row, column, value) triples; dense ones (numeric, dense)
give a (rows, width) float32 block. Encoders see raw strings so that errors can name the row.

The hashing trick is scikit-learn's FeatureHasher: MurmurHash3 (x86, 32-bit, seed 0) of each
token's UTF-8 bytes read as a signed int32 h; column abs(h) % n_features (h = -2**31 maps to
(2**31 - 1 - (n - 1)) % n), value +1 if h >= 0 else -1 (with alternate_sign), summed per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardgraph.config import FeatureConfig
from shardgraph.data.dictionary import string_buffers
from shardgraph.errors import InputError

_C1, _C2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def murmur3_32(offsets: np.ndarray, data: np.ndarray, seed: int = 0) -> np.ndarray:
    """MurmurHash3_x86_32 of every string (offsets (n+1,), UTF-8 bytes), as (n,) int32.

    Vectorised over strings: one numpy pass per 4-byte block of the longest string.
    """
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    n = len(lengths)
    h = np.full(n, seed, dtype=np.uint32)
    blocks = lengths // 4
    padded = np.concatenate([data, np.zeros(4, np.uint8)]).astype(np.uint32)
    with np.errstate(over="ignore"):
        for b in range(int(blocks.max()) if n else 0):
            rows = np.flatnonzero(blocks > b)
            at = starts[rows] + 4 * b
            k = padded[at] | (padded[at + 1] << 8) | (padded[at + 2] << 16) | (padded[at + 3] << 24)
            k = _rotl(k * _C1, 15) * _C2
            hr = _rotl(h[rows] ^ k, 13)
            h[rows] = hr * np.uint32(5) + np.uint32(0xE6546B64)
        remainder = lengths & 3
        tail = starts + 4 * blocks
        k = np.zeros(n, dtype=np.uint32)
        for byte in (2, 1, 0):
            has = remainder > byte
            k[has] ^= padded[tail[has] + byte] << np.uint32(8 * byte)
        has_tail = remainder > 0
        k = _rotl(k * _C1, 15) * _C2
        h[has_tail] ^= k[has_tail]
        h ^= lengths.astype(np.uint32)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h.view(np.int32)


def hash_columns(hashes: np.ndarray, n_features: int, alternate_sign: bool) -> tuple[np.ndarray, np.ndarray]:
    """(column, sign) of each int32 hash, as FeatureHasher places it."""
    h = hashes.astype(np.int64)
    column = np.abs(h) % n_features
    column[h == -(2**31)] = (2**31 - 1 - (n_features - 1)) % n_features
    sign = np.where(h >= 0, 1.0, -1.0).astype(np.float32) if alternate_sign else np.ones(len(h), np.float32)
    return column, sign


@dataclass
class SparseBlock:
    """Entries of a block of rows: row (block row index), column, value."""

    rows: np.ndarray
    columns: np.ndarray
    values: np.ndarray


def tokenize(values: pa.Array, config: FeatureConfig) -> pa.ListArray:
    """Tokens of each value (nulls and empty values: no token)."""
    values = pc.fill_null(values.cast(pa.string()), "")
    if config.tokenizer == "none":
        lists = pc.split_pattern(values, "\x00")
        return pc.if_else(pc.equal(values, ""), pa.scalar([], pa.list_(pa.string())), lists)
    if config.tokenizer == "whitespace":
        return pc.utf8_split_whitespace(values)
    if config.tokenizer == "words":
        return pc.split_pattern_regex(pc.utf8_lower(pc.replace_substring_regex(values, r"[^\p{L}\p{N}]+", " ")),
                                      " ")
    texts = values.to_pylist()
    n = config.ngram
    grams = [[t[i : i + n] for i in range(max(len(t) - n + 1, 1 if t else 0))] for t in texts]
    return pa.array(grams, type=pa.list_(pa.string()))


def encode_hash(values: pa.Array, column: str, config: FeatureConfig) -> SparseBlock:
    """Signed hashing trick of the tokens of each value (empty tokens dropped)."""
    lists = tokenize(values, config)
    flat = pc.list_flatten(lists)
    rows = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = pc.greater(pc.binary_length(flat), 0)
    flat, rows = flat.filter(keep), rows[keep.to_numpy(zero_copy_only=False)]
    if config.prefix:
        flat = pc.binary_join_element_wise(pa.scalar(column + "="), flat, "")
    flat = flat.cast(pa.large_string()) if len(flat) else pa.array([], pa.large_string())
    offsets, data = string_buffers(flat)
    columns, signs = hash_columns(murmur3_32(offsets, data), config.n_features, config.alternate_sign)
    return SparseBlock(rows, columns, signs)


def parse_floats(values: pa.Array, path: str, first_line: int, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(values (n,) float64 with NaN for missing, missing (n,) bool); text raises naming the line."""
    text = pc.utf8_trim_whitespace(pc.fill_null(values.cast(pa.string()), ""))
    missing = pc.equal(text, "").to_numpy(zero_copy_only=False)
    try:
        parsed = pc.cast(pc.if_else(pc.equal(text, ""), "nan", text), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        for i, value in enumerate(text.to_pylist()):
            try:
                float(value or "nan")
            except ValueError:
                raise InputError(f"{value!r} is not a number (column {column!r} is numeric)", path=path,
                                 line=first_line + i, field=column) from None
        raise
    out = parsed.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isfinite(out) & ~missing
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{text[i].as_py()!r} is not a finite number", path=path, line=first_line + i,
                         field=column)
    return out, missing


def encode_multi_hot(values: pa.Array, path: str, first_line: int, column: str, config: FeatureConfig) -> SparseBlock:
    """Ids listed in each value (`12 87 911`) as 1.0 entries; ids must be in [0, n_features)."""
    lists = pc.split_pattern(pc.fill_null(values.cast(pa.string()), ""), config.separator)
    flat = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    rows = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = pc.greater(pc.binary_length(flat), 0)
    flat, rows = flat.filter(keep), rows[keep.to_numpy(zero_copy_only=False)]
    try:
        ids = pc.cast(flat, pa.int64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        ids = np.full(len(flat), -1, dtype=np.int64)
        for i, token in enumerate(flat.to_pylist()):
            ids[i] = int(token) if token.lstrip("-").isdigit() else -1
    bad = (ids < 0) | (ids >= config.n_features)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{flat[i].as_py()!r} is not an id in [0, {config.n_features}) (n_features of the "
                         "multi_hot column)", path=path, line=first_line + int(rows[i]), field=column)
    return SparseBlock(rows, ids, np.ones(len(ids), np.float32))


def encode_dense(values: pa.Array, path: str, first_line: int, column: str, dimension: int,
                 separator: str) -> np.ndarray:
    """(n, dimension) float32 vectors from fields like `0.1 0.5 -2`; an empty field is all zeros."""
    texts = pc.fill_null(values.cast(pa.string()), "").to_pylist()
    out = np.zeros((len(texts), dimension), dtype=np.float32)
    for i, text in enumerate(texts):
        parts = text.split(separator) if separator != " " else text.split()
        if not parts:
            continue
        if len(parts) != dimension:
            raise InputError(f"the vector has {len(parts)} values; column {column!r} has {dimension}",
                             path=path, line=first_line + i, field=column)
        try:
            out[i] = [float(p) for p in parts]
        except ValueError:
            raise InputError(f"{text!r} is not a vector of numbers", path=path, line=first_line + i,
                             field=column) from None
    return out
