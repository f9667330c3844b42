"""Byte-level edits of a block of text lines before pyarrow parses it: leading lines dropped,
comment lines cut out, runs of blanks collapsed to one tab (pyarrow's CSV parser takes one
delimiter character and knows no comments)."""

from __future__ import annotations

import numpy as np

from shardgraph.utils.kernels import kernels


def collapse_blanks(chunk: bytes) -> bytes:
    """Runs of spaces and tabs -> one tab; blanks at the start and end of lines removed.

    One pass of a C loop (shardgraph/_kernels.c) where it was built, numpy otherwise."""
    library = kernels()
    if library is None:
        return collapse_blanks_numpy(chunk)
    source = np.frombuffer(chunk, dtype=np.uint8)
    out = np.empty(len(chunk), dtype=np.uint8)
    written = library.collapse_blanks(source.ctypes.data, len(chunk), out.ctypes.data)
    return out[:written].tobytes()


def collapse_blanks_numpy(chunk: bytes) -> bytes:
    """collapse_blanks in numpy (a dozen passes over the block instead of one)."""
    a = np.frombuffer(chunk, dtype=np.uint8)
    blank = (a == 32) | (a == 9)
    if not blank.any():
        return chunk
    after_break = np.empty_like(blank)
    after_break[0] = True
    after_break[1:] = blank[:-1] | (a[:-1] == 10)
    keep = ~blank | ~after_break  # non-blanks, and the first blank of a run not at a line start
    a, blank = a[keep], blank[keep]
    before_break = np.empty_like(blank)
    before_break[-1] = True
    before_break[:-1] = (a[1:] == 10) | (a[1:] == 13)
    keep = ~(blank & before_break)  # a blank right before a line end goes
    out = a[keep]
    out[blank[keep]] = 9
    return out.tobytes()


def drop_lines(chunk: bytes, count: int) -> tuple[bytes, int]:
    """The chunk without its first `count` lines, and how many lines that was (fewer at its end)."""
    position = 0
    for dropped in range(count):
        cut = chunk.find(b"\n", position)
        if cut < 0:
            return b"", dropped + (position < len(chunk))
        position = cut + 1
    return chunk[position:], count


def drop_comments(chunk: bytes, comment_bytes: list[bytes]) -> tuple[bytes, int]:
    """The chunk without its comment lines, and how many there were."""
    prefixes = tuple(comment_bytes)
    lines = chunk.split(b"\n")
    kept = [line for line in lines if not line.startswith(prefixes)]
    return b"\n".join(kept), len(lines) - len(kept)
