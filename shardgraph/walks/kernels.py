"""The compiled walker (shardgraph/_walks.c), loaded with ctypes; None where it was not built."""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from functools import cache

log = logging.getLogger(__name__)


@cache
def walk_kernels() -> ctypes.CDLL | None:
    """The library, or None where no C compiler was present at install."""
    spec = importlib.util.find_spec("shardgraph._walks")
    if spec is None or spec.origin is None:
        log.warning("shardgraph._walks is not built: walks run in Python, far slower (reinstall with a C "
                    "compiler present)")
        return None
    library = ctypes.CDLL(spec.origin)
    i64, f64, pointer = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
    library.sg_random_walks.argtypes = [
        pointer, pointer, ctypes.c_int, pointer, pointer, pointer, pointer, pointer, i64, i64, f64, f64,
        ctypes.c_uint64, i64, pointer, pointer, pointer, pointer, pointer, ctypes.c_int,
    ]
    library.sg_random_walks.restype = ctypes.c_int
    return library
