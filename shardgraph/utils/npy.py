"""Append-only .npy files: a fixed-size header is reserved first and filled in at close,
so edges can be streamed to disk and later memory-mapped with np.load(mmap_mode='r')."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xxhash

HEADER_BYTES = 128
MAGIC = b"\x93NUMPY\x01\x00"


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    body = f"{{'descr': '{np.dtype(dtype).str}', 'fortran_order': False, 'shape': {shape!r}, }}"
    header_len = HEADER_BYTES - len(MAGIC) - 2
    if len(body) + 1 > header_len:
        raise ValueError(f"npy header too long for shape {shape}")
    text = body.ljust(header_len - 1) + "\n"
    return MAGIC + header_len.to_bytes(2, "little") + text.encode("latin1")


class NpyAppender:
    """Rows of a fixed width and dtype appended to an .npy file; `close()` writes the shape.

    The xxh3-64 of the payload (the bytes after the header) is kept as rows are written.
    """

    def __init__(self, path: str | Path, dtype: np.dtype | type, width: int | None) -> None:
        """`width` None: a 1-D array of shape (rows,)."""
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.width = width
        self.rows = 0
        self._hash = xxhash.xxh3_64()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "wb") as f:
            f.write(npy_header(self.dtype, self._shape()))

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self._shape()[1:]:
            raise ValueError(f"expected rows of shape {self._shape()[1:]}, got shape {rows.shape}")
        data = rows.data  # the array's own bytes, no copy
        with open(self.path, "ab") as f:
            f.write(data)
        self._hash.update(data)
        self.rows += rows.shape[0]

    def close(self, durable: bool = True) -> str:
        """Write the final header (and with `durable`, flush the file to disk); return the payload
        checksum."""
        with open(self.path, "r+b") as f:
            f.write(npy_header(self.dtype, self._shape()))
            if durable:
                f.flush()
                os.fsync(f.fileno())
        return self.checksum

    def _shape(self) -> tuple[int, ...]:
        return (self.rows,) if self.width is None else (self.rows, self.width)

    @property
    def checksum(self) -> str:
        return self._hash.hexdigest()


class NpyReader:
    """Rows of an .npy file read with plain reads, not a memory map: a pass over a file larger than
    memory leaves no mapped pages behind in the process (a map's touched pages count in its PSS
    until it is closed), only the block asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran:
            raise ValueError(f"{self.path}: Fortran-ordered arrays are not supported")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self._row_items = int(np.prod(self.shape[1:], dtype=np.int64))

    @property
    def rows(self) -> int:
        return self.shape[0]

    def read(self, start: int, end: int) -> np.ndarray:
        """Rows [start, end) as a new array."""
        start, end = max(0, start), min(self.rows, end)
        count = max(0, end - start) * self._row_items
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self._row_items * self.dtype.itemsize)
            block = np.fromfile(f, dtype=self.dtype, count=count)
        if block.size != count:
            raise ValueError(f"{self.path}: truncated, expected {count} items from row {start}, read {block.size}")
        return block.reshape((end - start, *self.shape[1:]))

    def read_ranges(self, ranges: list[tuple[int, int]]) -> np.ndarray:
        """The rows of several [start, end) ranges, in that order, as one new array (one read each)."""
        row_bytes = self._row_items * self.dtype.itemsize
        out = np.empty((sum(end - start for start, end in ranges), *self.shape[1:]), dtype=self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        at = 0
        with open(self.path, "rb", buffering=0) as f:
            for start, end in ranges:
                if not 0 <= start <= end <= self.rows:
                    raise ValueError(f"{self.path}: rows [{start}, {end}) are outside its {self.rows} rows")
                size = (end - start) * row_bytes
                f.seek(self.offset + start * row_bytes)
                got = f.readinto(view[at : at + size])
                if got != size:
                    raise ValueError(f"{self.path}: truncated, expected {size} bytes from row {start}, read {got}")
                at += size
        return out


def payload_checksum(array: np.ndarray) -> str:
    """xxh3-64 of an array's bytes, in chunks (works on memory maps without loading them whole)."""
    hasher = xxhash.xxh3_64()
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8) if array.size else np.zeros(0, np.uint8)
    step = 16 << 20
    for start in range(0, flat.shape[0], step):
        hasher.update(flat[start : start + step].data)  # the array's memory, no copy
    return hasher.hexdigest()


def file_checksum(path: str | Path) -> str:
    hasher = xxhash.xxh3_64()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()
