"""Outputs appear complete or not at all: write to a temporary sibling, fsync, rename."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from shardgraph.errors import ShardgraphError


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_path


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under root (children first)."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_path(os.path.join(dirpath, name))
        fsync_dir(dirpath)


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A unique hidden name next to `path` for a file or directory that becomes `path` by rename;
    siblings that dead processes left are removed first."""
    if tag == "tmp":
        remove_stale_siblings(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_stale_siblings(path: Path) -> None:
    """Remove the temporary siblings of `path` (see `temp_sibling`) left by processes of this host
    that died without cleaning up (kill -9, power loss); those of live processes are left alone."""
    _remove_stale(path.parent, f".{path.name}.")


def remove_stale_temporaries(directory: Path) -> None:
    """`remove_stale_siblings` for every file of `directory`: temporaries whose final name will not be
    written again (a versioned file: the next run writes the next version) are collected here."""
    _remove_stale(directory, ".")


_TEMPORARY = re.compile(r"\.(tmp|old)-(\d+)-[0-9a-f]{8}$")


def _remove_stale(directory: Path, prefix: str) -> None:
    import psutil

    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        found = _TEMPORARY.search(entry.name)
        if not entry.name.startswith(prefix) or found is None or psutil.pid_exists(int(found.group(2))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def disk_full_message(exc: OSError, what: str | Path) -> str | None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"No space left on the device while writing {what} ({exc.strerror}); nothing was written."
    return None


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `path` in one rename.

    On any error, Ctrl-C or SIGTERM the temporary directory is removed and `path` is left
    as it was. An existing `path` is refused unless `overwrite`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ShardgraphError(f"{path} already exists; pass --overwrite to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_sibling(path)
    temp.mkdir()
    try:
        with terminate_as_interrupt():
            yield temp
            fsync_tree(temp)
        if path.exists():
            trash = temp_sibling(path, "old")
            os.rename(path, trash)
            os.rename(temp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(temp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        message = disk_full_message(exc, path)
        if message:
            raise ShardgraphError(message) from exc
        raise
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file; on success it is fsynced and renamed to `path` (then the directory is
    fsynced); on any error it is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_sibling(path)
    try:
        with open(temp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file by temp + fsync + rename (+ fsync of the directory)."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


_signals_received: list[int] = []
_depth = [0]  # nesting of terminate_as_interrupt blocks; the outermost one resets the record


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C or SIGTERM arrived inside `terminate_as_interrupt`.

    The handler raises at once, but an exception raised where Python cannot propagate it (a
    destructor, a callback from C) is printed and dropped; loops that wait call this so that
    such a signal still stops the run."""
    if _signals_received:
        raise KeyboardInterrupt(f"signal {_signals_received[-1]}")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (and Ctrl-C) into KeyboardInterrupt inside the block, so cleanup code runs,
    and remember it for `raise_if_interrupted` (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        _signals_received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    if _depth[0] == 0:
        _signals_received.clear()
    _depth[0] += 1
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)
        _depth[0] -= 1
        if _depth[0] == 0:
            _signals_received.clear()
