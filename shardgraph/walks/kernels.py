"""The compiled walker (shardgraph/_walks.c), loaded with ctypes; None where it was not built."""

from __future__ import annotations

import ctypes
import logging
from functools import cache

from shardgraph.utils.kernels import load_extension

log = logging.getLogger(__name__)


@cache
def walk_kernels() -> ctypes.CDLL | None:
    """The library, or None where no C compiler was present at install."""
    library = load_extension("shardgraph._walks", "walks run in Python, far slower (reinstall with a C "
                             "compiler present)", logging.WARNING)
    if library is None:
        return None
    i64, f64, pointer = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
    library.sg_random_walks.argtypes = [
        pointer, pointer, ctypes.c_int, pointer, pointer, pointer, pointer, pointer, i64, i64, f64, f64,
        ctypes.c_uint64, i64, pointer, pointer, pointer, pointer, pointer, ctypes.c_int,
    ]
    library.sg_random_walks.restype = ctypes.c_int
    library.sg_window_pairs.argtypes = [pointer, pointer, i64, i64, i64, ctypes.c_int, ctypes.c_int, ctypes.c_uint64,
                                        pointer, pointer, pointer]
    library.sg_window_pairs.restype = i64
    return library
