"""One writer per output: a lock beside a run or dataset directory, held while a command writes it.

The lock is an flock(2) on `.<name>.lock` in the parent directory (beside, not inside, so that
--overwrite can remove and recreate the directory while holding it). The kernel releases it when
the holder exits, however it exits (kill -9 included): a lock file left behind by a dead process is
stale and simply taken again. The file records the holder's pid, host and command, for the message
a second writer gets.
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


def lock_file(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold the lock of `path` (a directory being written); refuse at once if another process holds it."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_file(path)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise ShardgraphError(
                f"{path} is being written by another {what} (pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')}, since {holder.get('since', '?')}: {holder.get('command', '?')}). "
                "Wait for it to finish or stop it; two writers would corrupt it.") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": " ".join(sys.argv)[:300]}).encode())
        yield
    finally:
        os.close(fd)  # releases the flock; the file stays (removing it would race with a waiting writer)


def _read_holder(fd: int) -> dict[str, str]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder: dict[str, str] = json.loads(os.read(fd, 4096) or b"{}")
        return holder
    except (OSError, ValueError):
        return {}
