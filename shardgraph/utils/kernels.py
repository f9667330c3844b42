"""The compiled C kernels (shardgraph/_kernels.c), loaded with ctypes.

setup.py builds them as an optional extension; where no C compiler was present at install the
callers fall back to torch ops, with the same results.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from functools import cache
from typing import Any

log = logging.getLogger(__name__)


def load_extension(module: str, without: str, level: int = logging.DEBUG) -> ctypes.CDLL | None:
    """One of the optional C extensions built by setup.py, or None where it was not built (logged with
    `without`, what runs instead)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        log.log(level, f"{module} is not built: {without}")
        return None
    return ctypes.CDLL(spec.origin)


@cache
def kernels() -> ctypes.CDLL | None:
    """The library, or None where it was not built."""
    library = load_extension("shardgraph._kernels", "the training step runs as torch ops only")
    if library is None:
        return None
    i64, f32, pointer = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    library.rowwise_adagrad_f32.argtypes = [pointer, i64, pointer, pointer, i64, pointer, i64, i64, f32]
    library.rowwise_adagrad_f32.restype = None
    library.rowwise_adagrad_bf16.argtypes = [pointer, i64, pointer, pointer, i64, pointer, i64, i64, f32,
                                             ctypes.c_uint64]
    library.rowwise_adagrad_bf16.restype = None
    library.softmax_blocks_f32.argtypes = [i64, i64, pointer, pointer, pointer, i64, pointer, pointer, pointer,
                                           pointer, pointer, pointer]
    library.softmax_blocks_f32.restype = None
    library.count_rank_block.argtypes = [i64, i64, pointer, i64, pointer, pointer, pointer]
    library.count_rank_block.restype = None
    library.collapse_blanks.argtypes = [pointer, i64, pointer]
    library.collapse_blanks.restype = i64
    step: list[Any] = [pointer, pointer, pointer, pointer, i64, i64, pointer, pointer, i64, i64, i64, i64, pointer,
                       pointer, i64, i64, f32, f32, pointer, pointer]
    library.dot_step_f32.argtypes = step
    library.dot_step_f32.restype = ctypes.c_double
    library.dot_step_bf16.argtypes = [*step, ctypes.c_uint64]
    library.dot_step_bf16.restype = ctypes.c_double
    library.idmap_lookup.argtypes = [pointer, pointer, pointer, i64, pointer, pointer, i64, i64, i64, pointer, pointer]
    library.idmap_lookup.restype = i64
    library.idmap_rehash.argtypes = [pointer, pointer, pointer, i64, pointer, pointer, pointer, i64]
    library.idmap_rehash.restype = None
    library.hash_strings_u64.argtypes = [pointer, pointer, i64, pointer, ctypes.c_uint64, ctypes.c_uint64, pointer,
                                         pointer]
    library.hash_strings_u64.restype = None
    return library
