"""Helpers shared by the benchmarks: timed runs with process-tree memory sampling, peers, graphs.

Memory is the peak over time of the summed PSS of a process and all its descendants
(shared pages counted once), sampled every 0.1 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PEERS = SHARED / "peers"
PBG_VENV = Path(os.environ.get("PBG_VENV", "/tmp/peer-pbg/venv"))
PYTHON = sys.executable
GEN_GRAPH = PEERS / "pbg" / "gen_graph.py"


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler:
    """Peak summed PSS and RSS of a process tree, sampled on a thread."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.peak_pss_kb = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            pss = rss = 0
            for p in procs:
                pss += pss_kb(p.pid)
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(cmd: list[str], log: Path | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> dict[str, Any]:
    """Run a command; return wall seconds, peak PSS (MiB) of its process tree, stdout."""
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, cwd=cwd)
    with TreeSampler(proc.pid) as sampler:
        out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if log is not None:
        log.write_text(out + "\n--- stderr ---\n" + err)
    if proc.returncode != 0:
        sys.stderr.write(err[-3000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return {"seconds": round(seconds, 2), "peak_mem_mb": round(sampler.peak_pss_kb / 1024, 1),
            "peak_rss_mb": round(sampler.peak_rss / 2**20, 1), "stdout": out, "stderr": err,
            "loadavg_before": round(load_before, 2)}


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
    """The peers' power-law graph generator (same file for every tool); cached in workdir."""
    stem = workdir / f"g_{nodes}_{edges}_{seed}"
    if holdout > 0:
        train, test = Path(f"{stem}_train.tsv"), Path(f"{stem}_test.tsv")
        if not train.exists():
            subprocess.run([PYTHON, str(GEN_GRAPH), "--nodes", str(nodes), "--edges", str(edges), "--seed",
                            str(seed), "--out", f"{stem}.tsv", "--holdout", str(holdout)], check=True)
        return {"train": train, "test": test}
    path = Path(f"{stem}.tsv")
    if not path.exists():
        subprocess.run([PYTHON, str(GEN_GRAPH), "--nodes", str(nodes), "--edges", str(edges), "--seed",
                        str(seed), "--out", str(path)], check=True)
    return {"train": path}


def pbg_python() -> Path:
    python = PBG_VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"PyTorch-BigGraph is not installed: run {PEERS / 'pbg' / 'install.sh'} first")
    return python


def machine_load() -> float:
    return round(os.getloadavg()[0], 2)


def pbg_config(entity_path: Path, edge_paths: list[Path], checkpoint_path: Path, partitions: int, dim: int,
               **options: object) -> str:
    """The text of a PyTorch-BigGraph config file (one entity type `node`, one relation `r0`)."""
    fields = {
        "entity_path": str(entity_path),
        "edge_paths": [str(p) for p in edge_paths],
        "checkpoint_path": str(checkpoint_path),
        "entities": {"node": {"num_partitions": partitions}},
        "relations": [{"name": "r0", "lhs": "node", "rhs": "node", "operator": "none"}],
        "dynamic_relations": False,
        "dimension": dim,
        "global_emb": False,
        **options,
    }
    body = ",\n        ".join(f"{key}={value!r}" for key, value in fields.items())
    return f"def get_torchbiggraph_config():\n    return dict(\n        {body},\n    )\n"
