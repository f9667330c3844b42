"""One writer per output: a lock beside a run or dataset directory, held while a command writes it.

The lock is an flock(2) on `.<name>.lock` in the parent directory (beside, not inside, so that
--overwrite can remove and recreate the directory while holding it). The holder removes the file
when it is done; the kernel releases the flock when the holder exits, however it exits (kill -9
included), so a lock file left behind by a dead process is stale and simply taken again. The file
records the holder's pid, host and command, for the message a second writer gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from shardgraph.errors import ShardgraphError
from shardgraph.utils.atomic import disk_full_message


def lock_file(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold the lock of `path` (a directory being written); refuse at once if another process holds it."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_file(path)
    fd = _acquire(lock, path, what)
    try:
        os.ftruncate(fd, 0)
        try:
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "command": " ".join(sys.argv)[:300]}).encode())
        except OSError as exc:  # a full disk: say so now rather than with a traceback
            message = disk_full_message(exc, path)
            if message is None:
                raise
            raise ShardgraphError(message) from exc
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # still held: a process that opened it meanwhile finds it unlinked and retries
        os.close(fd)


def _acquire(lock: Path, path: Path, what: str) -> int:
    """An fd holding the flock of the file now at `lock` (not of one unlinked by its last holder)."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ShardgraphError(
                f"{path} is being written by another {what} (pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')}, since {holder.get('since', '?')}: {holder.get('command', '?')}). "
                "Wait for it to finish or stop it; two writers would corrupt it.") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _read_holder(fd: int) -> dict[str, str]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder: dict[str, str] = json.loads(os.read(fd, 4096) or b"{}")
        return holder
    except (OSError, ValueError):
        return {}
