"""Memory accounting: peak RSS of this process, and the summed PSS of a process tree.

PSS (proportional set size) splits each shared page between the processes that map it,
so summing PSS over a process and its workers counts shared-memory embeddings once.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from types import TracebackType

import psutil


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def tree_pss_bytes(pid: int | None = None) -> int:
    """Summed PSS of a process and all its descendants."""
    try:
        root = psutil.Process(pid or os.getpid())
        pids = [root.pid] + [child.pid for child in root.children(recursive=True)]
    except psutil.Error:
        return 0
    return sum(pss_bytes(p) for p in pids)


class PeakMemory:
    """Samples the summed PSS of this process tree on a background thread; `peak_mb` is the max seen.

    Use as a context manager around the work to measure.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shardgraph-memory", daemon=True)

    def _run(self) -> None:
        while True:
            started = time.perf_counter()
            self.sample()
            # reading smaps of processes that map gigabytes of shared tables takes the kernel a
            # while, on the cores that train: keep the sampler under ~3% of one core
            if self._stop.wait(max(self.interval, 30 * (time.perf_counter() - started))):
                break

    def sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, tree_pss_bytes())

    @property
    def peak_mb(self) -> float:
        return round(max(self.peak_bytes / 2**20, 0.0), 1)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
