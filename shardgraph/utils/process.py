"""Child processes that do not outlive their parent."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux prctl PR_SET_PDEATHSIG).

    A worker in the middle of a long task would otherwise keep running, and keep its shared memory,
    after the trainer is killed with SIGKILL. Returns False where the call is not available (the
    worker then notices between tasks that its parent is gone). Call it first thing in the child
    with the pid of the parent that started it: if that parent is already gone (it died while the
    child was still importing), the child exits at once."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # died before the request took effect
        os._exit(1)
    return True


def die_with_launcher() -> None:
    """For a trainer that torchrun's agent started (its direct parent): SIGKILL when the agent dies, and
    exit at once if it is gone already (the trainer was reparented to init, and init is no torch launcher).

    The agent starts each trainer in a session of its own, so a SIGKILL to the agent's process group
    misses the trainers, and it hosts the rendezvous store: without it a trainer waits on a dead store.
    Does nothing outside torchrun (no TORCHELASTIC_RUN_ID in the environment)."""
    if os.environ.get("TORCHELASTIC_RUN_ID") is None:
        return
    parent = os.getppid()
    if parent == 1:
        try:
            with open("/proc/1/cmdline", "rb") as f:
                init = f.read()
        except OSError:
            init = b"torch"  # cannot tell: assume torchrun runs as PID 1 (a container)
        if b"torch" not in init:
            os._exit(1)
    die_with_parent(parent)
