"""Helpers of every benchmark: timed runs with process-tree memory sampling, the cached graphs, JSON lines.

Every tool, ours and the peer, is measured the same way: the command runs as a child process
of the bench, wall time is taken around the process (start-up and imports included), and
memory is the peak over time of the summed PSS (proportional set size: pages shared between
processes counted once, split between them) of the process and all its descendants, sampled
every SAMPLE_INTERVAL seconds by one TreeSampler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.graphs import GraphSpec, generate

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# the real data sets benches may read (never the peers' scripts): ../shared/datasets beside a clone
DATASETS = Path(os.environ.get("SHARDGRAPH_DATASETS", REPO.parent / "shared" / "datasets"))
PBG_VENV = Path(os.environ.get("PBG_VENV", REPO / ".peers" / "pbg"))
"""The PyTorch-BigGraph peer's venv, made by `bash bench/peers/pbg.sh` (same variable, same default)."""
PBG_SCRIPTS = REPO / "bench" / "peers" / "pbg"
"""Our helper scripts that run inside the peer's venv."""
SAMPLE_INTERVAL = 0.1
"""Seconds between two memory samples, for every tool."""


def pss_kb(pid: int) -> int:
    """PSS of one process in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler:
    """Peak over time of the summed PSS of some processes and all their descendants, sampled on a thread."""

    def __init__(self, pids: list[int], interval: float = SAMPLE_INTERVAL) -> None:
        self.pids, self.interval = pids, interval
        self.peak_pss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        roots = []
        for pid in self.pids:
            try:
                roots.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        while not self._stop.is_set():
            pids: set[int] = set()
            for root in roots:
                try:
                    pids.update(p.pid for p in [root, *root.children(recursive=True)])
                except psutil.NoSuchProcess:
                    continue
            self.peak_pss_kb = max(self.peak_pss_kb, sum(pss_kb(pid) for pid in pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_group(commands: list[list[str]], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> dict[str, Any]:
    """Start commands together; wall seconds until the last ends, peak summed PSS (MiB) of all, each stdout.

    A failing command ends the bench with its stderr.
    """
    load_before = machine_load()
    started = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **(env or {})}, cwd=cwd) for c in commands]
    with TreeSampler([p.pid for p in procs]) as sampler:
        outputs = [p.communicate() for p in procs]
    seconds = time.perf_counter() - started
    for cmd, p, (_, err) in zip(commands, procs, outputs, strict=True):
        if p.returncode != 0:
            sys.stderr.write(err[-3000:])
            raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}")
    return {"seconds": round(seconds, 2), "peak_mem_mb": round(sampler.peak_pss_kb / 1024, 1),
            "stdouts": [out for out, _ in outputs], "loadavg_before": load_before}


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Run one command; wall seconds, peak summed PSS (MiB) of its process tree, its stdout."""
    result = run_group([cmd], env, cwd)
    return {**result, "stdout": result["stdouts"][0]}


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise ValueError("no JSON line in output")


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def generated_graph(workdir: Path, nodes: int, edges: int, seed: int = 0, holdout: float = 0.0) -> dict[str, Path]:
    """The benches' power-law graph (bench/graphs.py), generated once and cached in workdir.

    Returns {"train": path} or, with a holdout, {"train": path, "test": path}. Not timed.
    """
    stem = workdir / (f"graph_{nodes}n_{edges}e_seed{seed}" + (f"_holdout{holdout}" if holdout > 0 else ""))
    paths = {"train": Path(f"{stem}_train.tsv"), "test": Path(f"{stem}_test.tsv")} if holdout > 0 else \
        {"train": Path(f"{stem}.tsv")}
    if not all(p.exists() for p in paths.values()):
        generate(GraphSpec(nodes, edges, seed), Path(f"{stem}.tsv"), holdout)
    return paths


def pbg_python() -> Path:
    python = PBG_VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"PyTorch-BigGraph is not installed in {PBG_VENV}: run `bash bench/peers/pbg.sh` first")
    return python


def machine_load() -> float:
    return round(os.getloadavg()[0], 2)
