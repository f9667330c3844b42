"""Soak (issue 18, part 7): a long training killed with SIGKILL every few minutes and resumed each
time, beside an undisturbed twin, with memory and quality per epoch.

    python -m tests.faults.soak --report soak.json                  # the campaign's soak (about an hour)
    python -m tests.faults.soak --nodes 2000 --edges 20000 --epochs 4 --kill-every 3 6     # a quick one

The benches' power-law graph (bench/graphs.py: 100k nodes / 2M edges, seed 0, 1% held out) is
imported with P = 4. Two runs train it with configs/large_graph.toml, a buffer of 2 partitions,
2 HOGWILD workers each, a checkpoint every 4 buckets and a validation after every epoch (2,000
held-out edges, 1,000 sampled candidates, raw): the undisturbed run and the soaked run start
together and share the machine. The soaked run's whole process session is killed with SIGKILL after
a seeded wait drawn in `--kill-every` seconds, once it has written a checkpoint of its own (every
fourth kill then also waits until a checkpoint file is being written), and `train --resume` starts
it again, until it has trained its last epoch.

After each kill: no process of the session is left, and the last complete checkpoint loads and
verifies. At the end (exit status 1 otherwise): both runs trained every epoch; the soaked run's last
validation MRR is within `--tolerance` of the undisturbed one's; no temporary file and no leaked
/dev/shm segment is left; memory is flat for each run: the highest per-epoch peak of the second half
of the epochs is at most 10% + 32 MiB above the highest of the first half (peak of the summed PSS of
the run's process tree, sampled every second and attributed to the epoch in progress, restarts
included).

One JSON report: per epoch each run's peak PSS and validation MRR, per kill when and what was found,
and the verdicts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.faults.kill_matrix import (
    checkpoint_writing,
    leaked_shm,
    params,
    session_processes,
    shm_entries,
    temp_files,
    verify_checkpoint,
)
from tests.faults.kill_matrix import (
    run as shardgraph_command,
)

REPO = Path(__file__).resolve().parents[2]
SHARDGRAPH = [sys.executable, "-m", "shardgraph"]
SETTINGS = ["storage.buffer_partitions=2", "training.workers=2", "training.checkpoint_every_buckets=4",
            "training.eval_every=1", "training.eval_negatives=1000", "eval.filtered=false", "eval.max_edges=2000"]


def prepare(work: Path, nodes: int, edges: int) -> Path:
    """The graph, imported with P = 4 (train, held-out edges as valid); returns the dataset."""
    sys.path.insert(0, str(REPO))
    from bench.common import generated_graph

    dataset = work / "ds"
    if not (dataset / "manifest.json").exists():
        graph = generated_graph(work, nodes, edges, holdout=0.01)
        shardgraph_command(["import", str(graph["train"]), "--valid", str(graph["test"]), "--out", str(dataset),
                    "--partitions", "4", "--no-progress", "--overwrite"])
    return dataset


def tree_pss_mb(pid: int) -> float:
    """Summed PSS of a process and its descendants, MiB (0 if gone)."""
    from shardgraph.utils.memory import tree_pss_bytes

    return tree_pss_bytes(pid) / 2**20


def checkpoint_field(run_dir: Path, key: str) -> int:
    """A number from the run's last complete checkpoint manifest (0 before the first)."""
    try:
        return int(json.loads((run_dir / "checkpoint/manifest.json").read_text())[key])
    except (OSError, ValueError, KeyError):
        return 0


def epochs_done(run_dir: Path) -> int:
    """Epochs complete in the run's last checkpoint (0 before the first)."""
    return checkpoint_field(run_dir, "epoch")


@dataclass
class Watched:
    """A run whose process tree is sampled every second; peaks are kept per epoch in progress."""

    run_dir: Path
    peaks: dict[int, float] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start_sampling(self) -> threading.Thread:
        def sample() -> None:
            while not self._stop.wait(1.0):
                proc = self.proc
                if proc is None or proc.poll() is not None:
                    continue
                epoch = epochs_done(self.run_dir) + 1
                self.peaks[epoch] = max(self.peaks.get(epoch, 0.0), tree_pss_mb(proc.pid))

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def train_argv(dataset: Path, run_dir: Path, epochs: int, resume: bool) -> list[str]:
    return [*SHARDGRAPH, "train", str(REPO / "configs/large_graph.toml"), "--dataset", str(dataset), "--out",
            str(run_dir), "--no-progress", *params([*SETTINGS, f"training.epochs={epochs}"]),
            *(["--resume"] if resume else [])]


def launch(argv: list[str], log: Path) -> subprocess.Popen[str]:
    with open(log, "a") as out:
        return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


def validation_mrr(run_dir: Path) -> dict[int, float]:
    """Validation MRR per epoch from the run's metrics log (every incarnation's evaluations; the last wins)."""
    out: dict[int, float] = {}
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "eval":
                out[int(record["epoch"])] = float(record["mrr"])
    return out


def flat(peaks: dict[int, float]) -> bool:
    epochs = sorted(peaks)
    if len(epochs) < 2:
        return True
    half = len(epochs) // 2
    first, second = max(peaks[e] for e in epochs[:half]), max(peaks[e] for e in epochs[half:])
    return second <= 1.10 * first + 32


def soak(work: Path, nodes: int, edges: int, epochs: int, kill_every: tuple[float, float], seed: int,
         tolerance: float, log: Any = print) -> dict[str, Any]:
    dataset = prepare(work, nodes, edges)
    reference, soaked = Watched(work / "undisturbed"), Watched(work / "soaked")
    for run in (reference, soaked):
        shutil.rmtree(run.run_dir, ignore_errors=True)
    rng = random.Random(seed)
    shm_before = shm_entries()
    started = time.monotonic()
    threads = [reference.start_sampling(), soaked.start_sampling()]
    reference.proc = launch(train_argv(dataset, reference.run_dir, epochs, resume=False), work / "undisturbed.log")
    kills: list[dict[str, Any]] = []
    resume = False
    problems: list[str] = []
    while True:
        soaked.proc = proc = launch(train_argv(dataset, soaked.run_dir, epochs, resume), work / "soaked.log")
        resume = True
        at_checkpoint = len(kills) % 4 == 3
        wait = rng.uniform(*kill_every)
        begun = time.monotonic()
        version = checkpoint_field(soaked.run_dir, "version")
        while_writing = False
        while proc.poll() is None:
            elapsed = time.monotonic() - begun
            # each incarnation lives until it has written a checkpoint of its own, so that the run
            # advances however slow its start-up is on a loaded machine
            progressed = checkpoint_field(soaked.run_dir, "version") > version
            if at_checkpoint and elapsed >= wait and progressed and checkpoint_writing(soaked.run_dir):
                while_writing = True
                break
            if not at_checkpoint and elapsed >= wait and progressed:
                break
            time.sleep(0.005 if at_checkpoint and elapsed >= wait else 0.1)
        if proc.poll() is not None:  # finished (or failed) before its kill
            if proc.returncode != 0:
                problems.append(f"the soaked run exited {proc.returncode} (see {work / 'soaked.log'})")
            break
        epoch = epochs_done(soaked.run_dir) + 1
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)
        left = [p.pid for p in session_processes(proc.pid) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        checkpoint = verify_checkpoint(soaked.run_dir)
        kill = {"at_s": round(time.monotonic() - started, 1), "epoch": epoch,
                "while": "writing a checkpoint" if while_writing else "running", "processes_left": left,
                "checkpoint": checkpoint or "verified"}
        kills.append(kill)
        log(f"kill {len(kills)} at {kill['at_s']} s, epoch {epoch} ({kill['while']}): checkpoint {kill['checkpoint']}"
            + (f", processes left {left}" if left else ""))
        if left:
            problems.append(f"kill {len(kills)}: processes left {left}")
            for pid in left:
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).kill()
        if checkpoint:
            problems.append(f"kill {len(kills)}: the checkpoint does not load: {checkpoint}")
    assert reference.proc is not None
    if reference.proc.wait() != 0:
        problems.append(f"the undisturbed run exited {reference.proc.returncode} (see {work / 'undisturbed.log'})")
    seconds = time.monotonic() - started
    for run in (reference, soaked):
        run.stop()
    for thread in threads:
        thread.join()
    quality = {name: validation_mrr(run.run_dir) for name, run in (("undisturbed", reference), ("soaked", soaked))}
    for name, run in (("undisturbed", reference), ("soaked", soaked)):
        if epochs_done(run.run_dir) != epochs:
            problems.append(f"the {name} run stopped after epoch {epochs_done(run.run_dir)} of {epochs}")
        if not flat(run.peaks):
            problems.append(f"the {name} run's memory grew: per-epoch peaks {run.peaks}")
    last_ref, last_soak = quality["undisturbed"].get(epochs), quality["soaked"].get(epochs)
    if last_ref is None or last_soak is None or abs(last_ref - last_soak) > tolerance:
        problems.append(f"final validation MRR: soaked {last_soak}, undisturbed {last_ref} (tolerance {tolerance})")
    leftovers = temp_files(work / "soaked")
    if leftovers:
        problems.append(f"temporary files left: {leftovers[:5]}")
    leaked = leaked_shm(shm_before)
    if leaked:
        problems.append(f"/dev/shm entries left: {sorted(leaked)[:5]}")
    per_epoch = [{"epoch": e, "soaked_peak_mb": round(soaked.peaks.get(e, 0.0), 1),
                  "undisturbed_peak_mb": round(reference.peaks.get(e, 0.0), 1),
                  "soaked_mrr": quality["soaked"].get(e), "undisturbed_mrr": quality["undisturbed"].get(e)}
                 for e in range(1, epochs + 1)]
    return {"nodes": nodes, "edges": edges, "epochs": epochs, "seconds": round(seconds, 1), "kills": kills,
            "per_epoch": per_epoch, "final_mrr": {"soaked": last_soak, "undisturbed": last_ref},
            "problems": problems, "ok": not problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=2_000_000)
    parser.add_argument("--epochs", type=int, default=160)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(120.0, 300.0), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest difference of the final MRRs")
    parser.add_argument("--scratch", help="work directory, kept (default: a temporary one, removed after)")
    parser.add_argument("--report", help="write the report as JSON here")
    args = parser.parse_args()
    work = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = soak(work, args.nodes, args.edges, args.epochs, tuple(args.kill_every), args.seed, args.tolerance,
                      log=lambda line: print(line, flush=True))
    finally:
        if not args.scratch:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=1)
    if args.report:
        Path(args.report).write_text(text)
    print(json.dumps({k: report[k] for k in ("epochs", "seconds", "final_mrr", "problems", "ok")}
                     | {"kills": len(report["kills"])}))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
