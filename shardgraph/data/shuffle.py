"""Shuffle the rows of a bucket file on disk in bounded memory, once, at import.

Training reads a bucket in blocks and each worker takes its share as a seeded permutation of
blocks (training/worker.py); edges inside a block stay in file order. An input file sorted by
source, relation or time would therefore feed the optimiser long runs of similar edges. One
shuffle at import removes that for every epoch and every worker count, at the cost of one more
read and write of the training buckets.

A bucket that fits in `memory_rows` rows is permuted in memory. A larger one is shuffled in two
passes (the scatter-gather shuffle): each row goes to one of k pile files chosen uniformly at
random, then each pile, small enough to fit, is permuted and appended to the output. A uniformly
random assignment to piles followed by a uniform permutation of each pile gives a uniformly
random permutation of the whole. Attribute files are permuted with their bucket, row for row.
The seed and the bucket's position fix the result: the same input gives the same dataset.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shardgraph.utils.npy import NpyAppender, NpyReader

DEFAULT_MEMORY_ROWS = 4 << 20  # 4Mi edge rows (48 MiB) held at once, plus the same again while permuting


def _appender_like(path: Path, source: NpyReader) -> NpyAppender:
    return NpyAppender(path, source.dtype, source.shape[1] if len(source.shape) == 2 else None)


def in_memory_order(rows: int, seed: Sequence[int]) -> np.ndarray:
    """The permutation shuffle_rows applies to files of at most `memory_rows` rows: rows already in
    memory, permuted by it, give the same bytes without a pass through the files."""
    return np.random.default_rng(list(seed)).permutation(rows)


def shuffle_rows(paths: Sequence[Path], seed: Sequence[int], memory_rows: int = DEFAULT_MEMORY_ROWS) -> list[str]:
    """Permute the rows of the aligned .npy files `paths` (the bucket first, then its attribute
    files) by one seeded random permutation, replacing each file by rename. Returns each file's new
    payload checksum (xxh3-64), in the order of `paths`."""
    arrays = [NpyReader(path) for path in paths]  # read, not mapped: no mapped pages stay in the PSS
    rows = arrays[0].rows
    if any(a.rows != rows for a in arrays):
        raise ValueError(f"{', '.join(map(str, paths))}: files to shuffle together differ in row count")
    temps = [path.with_name(path.name + ".shuffled") for path in paths]
    outs = [_appender_like(temp, a) for temp, a in zip(temps, arrays, strict=True)]
    if rows <= memory_rows:
        order = in_memory_order(rows, seed)
        for out, array in zip(outs, arrays, strict=True):
            out.append(array.read(0, rows)[order])
    else:
        _scatter_gather(arrays, outs, np.random.default_rng(list(seed)), memory_rows)
    checksums = [out.close() for out in outs]
    for temp, path in zip(temps, paths, strict=True):
        os.replace(temp, path)
    return checksums


def _scatter_gather(arrays: list[NpyReader], outs: list[NpyAppender], rng: np.random.Generator,
                    memory_rows: int) -> None:
    rows = arrays[0].rows
    # Piles of about half the memory budget, so that a pile's binomial excess still fits.
    piles = math.ceil(rows / (memory_rows // 2))
    folders = [out.path.with_name(out.path.name + ".piles") for out in outs]
    pile_files = [[_appender_like(folder / f"{k}.npy", a) for k in range(piles)]
                  for folder, a in zip(folders, arrays, strict=True)]
    try:
        for start in range(0, rows, memory_rows):
            end = min(rows, start + memory_rows)
            pile = rng.integers(piles, size=end - start)
            order = np.argsort(pile, kind="stable")
            bounds = np.searchsorted(pile[order], np.arange(piles + 1))
            for files, array in zip(pile_files, arrays, strict=True):
                block = array.read(start, end)[order]
                for k in range(piles):
                    if bounds[k + 1] > bounds[k]:
                        files[k].append(block[bounds[k]:bounds[k + 1]])
        for files in pile_files:
            for f in files:
                f.close(durable=False)  # scratch, read back at once
        for k in range(piles):
            order = rng.permutation(pile_files[0][k].rows)
            for out, files in zip(outs, pile_files, strict=True):
                out.append(np.load(files[k].path)[order])
                files[k].path.unlink()
    finally:
        for folder in folders:
            for leftover in folder.glob("*.npy"):
                leftover.unlink()
            if folder.exists():
                folder.rmdir()
