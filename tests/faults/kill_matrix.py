"""kill -9 matrix (issue 18, part 2): every long command killed with SIGKILL at seeded random
moments, then rerun (or resumed), and checked.

    python -m tests.faults.kill_matrix --moments 20 --report kill_matrix.json     # the campaign
    python -m tests.faults.kill_matrix --commands import,train-p1 --moments 2    # a few

For each command an undisturbed reference run is timed first; each moment is then a fresh copy
of the inputs, the command started in its own session, and the whole session killed with
SIGKILL after a seeded fraction of the reference time (the second of every four train moments instead waits
until a checkpoint file is being written). After the kill:

  - no process of the session is left;
  - a checkpoint that exists loads and verifies (the previous complete one);
then the command is run again (`--resume` for training) and:
  - it exits 0;
  - its result equals the reference (import, export, eval: same bytes or metrics) or matches it
    in quality (training: final epoch reached, MRR within 0.05; walks: Micro-F1 of the planted
    communities within 0.1; embed-new: vectors close);
  - no temporary file (.tmp-/.old-) is left and no new /dev/shm entry exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[2]
SHARDGRAPH = [sys.executable, "-m", "shardgraph"]

WALKS_F1_TOLERANCE = 0.1  # undisturbed walk runs with other seeds: Micro-F1 0.301, 0.307, 0.336 (chance 0.05)
TRAIN = ["model.dimension=16", "training.workers=1", "training.batch_size=256", "training.num_batch_negs=32",
         "training.num_uniform_negs=32", "training.lr=0.1", "training.checkpoint_every_buckets=4"]


@dataclass
class Command:
    """A long command: its argv in a work directory, how to rerun it, what its result is."""

    name: str
    argv: Callable[[Path], list[str]]
    rerun: Callable[[Path], list[str]]
    result: Callable[[Path, str], Any]  # (work dir, stdout) -> something comparable
    same: Callable[[Any, Any], bool] = lambda a, b: a == b
    inputs: tuple[str, ...] = ()  # names under the shared inputs directory copied into each work dir
    checkpointed: str | None = None  # run directory (relative) whose checkpoint must load after a kill
    launcher: list[str] = field(default_factory=lambda: SHARDGRAPH)


@dataclass
class Outcome:
    command: str
    moment: int
    killed_at_s: float
    killed_while: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


# ----------------------------------------------------------------------------- inputs


def make_inputs(root: Path, size: str) -> None:
    """A graph (small: 300 entities, 4k edges; large: 20k entities, 300k edges) and its dataset."""
    rng = np.random.default_rng(0)
    entities, edges, relations = (300, 4_000, 4) if size == "small" else (20_000, 300_000, 12)
    communities = rng.integers(0, 20, size=entities)
    lhs = rng.integers(0, entities, size=edges)
    rel = rng.integers(0, relations, size=edges)
    members = [np.flatnonzero(communities == c) for c in range(20)]
    rhs = np.array([rng.choice(members[(communities[a] + r) % 20]) for a, r in zip(lhs, rel, strict=True)])
    lines = [f"e{a}\tr{r}\te{b}\n" for a, r, b in zip(lhs, rel, rhs, strict=True)]
    write_labels(root, communities)
    cut = int(len(lines) * 0.95)
    (root / "train.tsv").write_text("".join(lines[:cut]))
    (root / "valid.tsv").write_text("".join(lines[cut:]))
    (root / "new.tsv").write_text("".join(f"fresh{i}\tr{i % relations}\te{i * 7 % entities}\n" for i in range(50)))
    run(["import", str(root / "train.tsv"), "--valid", str(root / "valid.tsv"), "--out", str(root / "ds"),
         "--partitions", "4", "--no-progress"])


def write_labels(root: Path, communities: np.ndarray) -> None:
    """labels.tsv: each entity's planted community (the class eval-nodes predicts from walk embeddings)."""
    (root / "labels.tsv").write_text("".join(f"e{i}\tc{c}\n" for i, c in enumerate(communities)))


def params(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("-p", override)]


def run(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*SHARDGRAPH, *argv], cwd=cwd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"shardgraph {' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return proc


# ----------------------------------------------------------------------------- results


def dataset_digest(path: Path) -> dict[str, Any]:
    manifest = json.loads((path / "manifest.json").read_text())
    for key in ("created", "seconds", "peak_rss_mb", "path", "shardgraph_version", "sources"):
        manifest.pop(key, None)
    return manifest


def trained_quality(work: Path, run_name: str) -> dict[str, Any]:
    manifest = json.loads((work / run_name / "checkpoint/manifest.json").read_text())
    proc = run(["eval", str(work / run_name), "--split", "valid", "--json"])
    return {"epoch": manifest["epoch"], "mrr": json.loads(proc.stdout.strip().splitlines()[-1])["mrr"]}


def walks_quality(work: Path, run_name: str, labels: Path) -> dict[str, Any]:
    """A walk run has no held-out edges to rank: its quality is how well its embeddings classify the
    planted communities (eval-nodes, half of the nodes labelled, 5 seeded splits)."""
    manifest = json.loads((work / run_name / "checkpoint/manifest.json").read_text())
    proc = run(["eval-nodes", str(work / run_name), "--labels", str(labels), "--train-fraction", "0.5",
                "--repeats", "5", "--json"])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"epoch": manifest["epoch"], "micro_f1": result["results"][0]["micro_f1"]}


def close_f1(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["epoch"] == b["epoch"] and abs(a["micro_f1"] - b["micro_f1"]) <= WALKS_F1_TOLERANCE


def close_quality(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["epoch"] == b["epoch"] and abs(a["mrr"] - b["mrr"]) <= 0.05


def vectors_close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, atol=1e-4))


def torchrun_launcher() -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "shardgraph"]


def commands(inputs: Path) -> dict[str, Command]:
    def train_args(out: str, *extra: str, epochs: int = 3) -> Callable[[Path], list[str]]:
        params_ = params([*TRAIN, f"training.epochs={epochs}", *extra])
        return lambda w: ["train", "--dataset", str(inputs / "ds"), "--out", str(w / out), "--no-progress", *params_]

    def resumed(argv: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        return lambda w: [*argv(w), "--resume"]

    def with_overwrite(argv: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        return lambda w: [*argv(w), "--overwrite"]

    def trained(name: str, argv: Callable[[Path], list[str]], **kw: Any) -> Command:
        return Command(name, argv, resumed(argv), lambda w, _o: trained_quality(w, "run"), close_quality,
                       checkpointed="run", **kw)

    walks_argv = train_args("run", "walks.method=deepwalk", "walks.walks_per_node=2", "walks.walk_length=10",
                            "walks.window=3", "model.comparator=dot", epochs=2)

    def import_argv(w: Path) -> list[str]:
        return ["import", str(inputs / "train.tsv"), "--valid", str(inputs / "valid.tsv"), "--out", str(w / "ds"),
                "--partitions", "4", "--no-progress", "-p", "data.block_mb=1"]

    def export_argv(w: Path) -> list[str]:
        return ["export", str(inputs / "run"), "--format", "tsv", "--out", str(w / "emb.tsv"), "--no-progress"]

    def index_argv(w: Path) -> list[str]:
        return ["index", str(inputs / "run"), "--out", str(w / "index"), "--kind", "hnsw", "--target-recall", "0.9"]

    def embed_argv(w: Path) -> list[str]:
        return ["embed-new", str(inputs / "run"), str(inputs / "new.tsv"), "--out", str(w / "new.npy"),
                "--epochs", "30"]

    def eval_argv(w: Path) -> list[str]:
        return ["eval", str(w / "run"), "--split", "valid", "--json"]

    def index_result(w: Path, _out: str) -> dict[str, Any]:
        meta = json.loads((w / "index/meta.json").read_text())
        return {"count": meta["count"], "recall_ok": meta["recall@10"] >= 0.9}

    return {
        "import": Command("import", import_argv, with_overwrite(import_argv),
                          lambda w, _o: dataset_digest(w / "ds")),
        "train-p1": Command("train-p1", _p1(train_args), resumed(_p1(train_args)),
                            lambda w, _o: trained_quality(w, "run"), close_quality, checkpointed="run"),
        # with 2 HOGWILD workers: the kill takes their pool too
        "train-p4-buffer": trained("train-p4-buffer", train_args("run", "storage.buffer_partitions=2",
                                                                 "training.workers=2")),
        "train-walks": Command("train-walks", walks_argv, resumed(walks_argv),
                               lambda w, _o: walks_quality(w, "run", inputs / "labels.tsv"), close_f1,
                               checkpointed="run"),
        "eval": Command("eval", eval_argv, eval_argv, lambda w, out: json.loads(out.strip().splitlines()[-1])["mrr"],
                        inputs=("run",)),
        "export": Command("export", export_argv, export_argv, lambda w, _o: (w / "emb.tsv").read_bytes()),
        "index": Command("index", index_argv, with_overwrite(index_argv), index_result),
        "embed-new": Command("embed-new", embed_argv, with_overwrite(embed_argv),
                             lambda w, _o: np.load(w / "new.npy"), vectors_close),
        "torchrun-2": Command("torchrun-2", train_args("run"), resumed(train_args("run")),
                              lambda w, _o: trained_quality(w, "run"), close_quality, checkpointed="run",
                              launcher=torchrun_launcher()),
    }


def _p1(train_args: Callable[..., Callable[[Path], list[str]]]) -> Callable[[Path], list[str]]:
    """Training on a P = 1 copy of the dataset (the shared one has 4 partitions)."""
    base = train_args("run")

    def argv(w: Path) -> list[str]:
        args = base(w)
        args[args.index("--dataset") + 1] = str(Path(args[args.index("--dataset") + 1]).parent / "ds1")
        return args

    return argv


# ----------------------------------------------------------------------------- the matrix


def session_processes(session: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == session:
                out.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def leaked_shm(before: set[str], settle_s: float = 3.0) -> set[str]:
    """New /dev/shm entries that outlive a short wait and that no live process maps: leaked ones.
    (The machine may be shared: other programs' segments come and go, and are mapped while in use.)"""
    deadline = time.monotonic() + settle_s
    new = shm_entries() - before
    while new and time.monotonic() < deadline:
        time.sleep(0.2)
        new &= shm_entries()
    if not new:
        return set()
    mapped: set[str] = set()
    for pid in (entry for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            with open(f"/proc/{pid}/maps") as f:
                mapped.update(line.split("/dev/shm/", 1)[1].split()[0] for line in f if "/dev/shm/" in line)
        except OSError:
            continue
    return new - mapped


def checkpoint_writing(run_dir: Path) -> bool:
    root = run_dir / "checkpoint"
    return root.exists() and any(".tmp-" in p.name for p in root.rglob("*"))


def start(command: Command, work: Path, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([*command.launcher, *argv], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(command: Command, work: Path, argv: list[str], timeout: float) -> tuple[int, str, str]:
    launcher = torchrun_launcher() if command.name.startswith("torchrun") else command.launcher
    proc = subprocess.Popen([*launcher, *argv], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def verify_checkpoint(run_dir: Path) -> str | None:
    """None if the run's last complete checkpoint loads and verifies (or none exists yet), else the problem."""
    if not (run_dir / "checkpoint/manifest.json").exists():
        return None
    from shardgraph.storage.checkpoint import CheckpointStore

    try:
        store = CheckpointStore(run_dir)
        manifest = store.manifest()
        if manifest is None:
            return "no complete checkpoint"
        store.verify(manifest)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def one_moment(command: Command, inputs: Path, work: Path, reference: Any, seconds: float, moment: int,
               rng: random.Random) -> Outcome:
    for name in command.inputs:
        shutil.copytree(inputs / name, work / name)
    shm_before = shm_entries()
    at_checkpoint = command.checkpointed is not None and moment % 4 == 1
    delay = rng.uniform(0.05, 1.0) * seconds
    proc = start(command, work, command.argv(work))
    started = time.monotonic()
    killed_while = "running"
    while proc.poll() is None:
        elapsed = time.monotonic() - started
        if at_checkpoint and checkpoint_writing(work / (command.checkpointed or "")):
            killed_while = "writing a checkpoint"
            break
        if not at_checkpoint and elapsed >= delay:
            break
        if elapsed > 3 * seconds + 30:
            break
        time.sleep(0.005 if at_checkpoint else 0.02)
    killed_at = time.monotonic() - started
    finished_first = proc.poll() is not None
    descendants: list[psutil.Process] = []  # torchrun starts its trainers in sessions of their own
    if finished_first:
        killed_while = "(finished before the kill)"
    else:
        with contextlib.suppress(psutil.Error):
            descendants = psutil.Process(proc.pid).children(recursive=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    problems: list[str] = []
    # a process the kill did not reach must die with its parent, within a few seconds
    _, alive = psutil.wait_procs(descendants, timeout=5)
    time.sleep(0.2)
    left = {p.pid: p for p in [*session_processes(proc.pid), *alive]
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}.values()
    if left:
        problems.append(f"processes left after the kill: {[p.pid for p in left]}")
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
    proc.communicate()  # the output pipes close once every process that held them is gone
    if command.checkpointed is not None:
        damaged = verify_checkpoint(work / command.checkpointed)
        if damaged:
            problems.append(f"the previous checkpoint does not load: {damaged}")
    rc, out, err = finish(command, work, command.rerun(work), timeout=10 * seconds + 120)
    if rc != 0:
        problems.append(f"the rerun failed (exit {rc}): {err.strip()[-500:]}")
    else:
        try:
            result = command.result(work, out)
            if not command.same(result, reference):
                problems.append(f"the result differs from the undisturbed run: {str(result)[:200]} vs "
                                f"{str(reference)[:200]}")
        except Exception as exc:
            problems.append(f"the result cannot be read: {type(exc).__name__}: {exc}")
    leftovers = temp_files(work)
    if leftovers:
        problems.append(f"temporary files left: {leftovers[:5]}")
    leaked = leaked_shm(shm_before)
    if leaked:
        problems.append(f"/dev/shm entries left: {sorted(leaked)[:5]}")
    return Outcome(command.name, moment, round(killed_at, 3), killed_while, problems)


def run_matrix(names: list[str], moments: int, seed: int, size: str, scratch: Path,
               log: Callable[[str], None] = lambda line: print(line, flush=True)) -> list[Outcome]:
    inputs = scratch / "inputs"
    if not (inputs / "ds").exists():
        inputs.mkdir(parents=True, exist_ok=True)
        make_inputs(inputs, size)
    if "train-p1" in names and not (inputs / "ds1").exists():
        run(["import", str(inputs / "train.tsv"), "--valid", str(inputs / "valid.tsv"), "--out", str(inputs / "ds1"),
             "--no-progress"])
    if {"eval", "export", "index", "embed-new"} & set(names) and not (inputs / "run").exists():
        run(["train", "--dataset", str(inputs / "ds"), "--out", str(inputs / "run"), "--no-progress",
             *params([*TRAIN, "training.epochs=3"])])
    table = commands(inputs)
    outcomes: list[Outcome] = []
    for name in names:
        command = table[name]
        rng = random.Random(f"{seed}-{name}")
        reference_dir = scratch / f"{name}-reference"
        shutil.rmtree(reference_dir, ignore_errors=True)
        reference_dir.mkdir()
        for item in command.inputs:
            shutil.copytree(inputs / item, reference_dir / item)
        started = time.monotonic()
        rc, out, err = finish(command, reference_dir, command.argv(reference_dir), timeout=3600)
        seconds = time.monotonic() - started
        if rc != 0:
            raise RuntimeError(f"the undisturbed {name} failed:\n{err[-3000:]}")
        reference = command.result(reference_dir, out)
        log(f"{name}: undisturbed run {seconds:.1f} s")
        for moment in range(moments):
            work = scratch / f"{name}-{moment}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            outcome = one_moment(command, inputs, work, reference, seconds, moment, rng)
            outcomes.append(outcome)
            log(f"  {name} #{moment}: killed at {outcome.killed_at_s:.2f} s ({outcome.killed_while}): "
                f"{'ok' if outcome.ok else '; '.join(outcome.problems)}")
            if outcome.ok:
                shutil.rmtree(work, ignore_errors=True)
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = table.setdefault(o.command, {"kills": 0, "during_checkpoint_write": 0, "finished_before_kill": 0,
                                           "resumed_correctly": 0})
        row["kills"] += o.killed_while != "(finished before the kill)"
        row["during_checkpoint_write"] += o.killed_while == "writing a checkpoint"
        row["finished_before_kill"] += o.killed_while == "(finished before the kill)"
        row["resumed_correctly"] += o.ok
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", default="import,train-p1,train-p4-buffer,train-walks,eval,export,index,"
                                              "embed-new,torchrun-2")
    parser.add_argument("--moments", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=["small", "large"], default="small",
                        help="small: 300 entities, 4k edges; large: 20k entities, 300k edges")
    parser.add_argument("--scratch", help="work directory (default: a temporary one, removed after)")
    parser.add_argument("--report", help="write the outcomes as JSON here")
    args = parser.parse_args()
    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="kill-matrix-"))
    try:
        outcomes = run_matrix(args.commands.split(","), args.moments, args.seed, args.size, scratch)
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    table = summary(outcomes)
    print(json.dumps(table, indent=1))
    if args.report:
        Path(args.report).write_text(json.dumps({"summary": table, "outcomes": [o.__dict__ for o in outcomes]},
                                                indent=1))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
