"""Out-of-core training: the partition buffer, bucket orders for a buffer, half-precision storage,
memory bounds, and checkpoints that survive a kill during write-back."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shardgraph.data.dataset import Dataset
from shardgraph.errors import TrainingError
from shardgraph.eval.evaluate import evaluate
from shardgraph.model.model import Model
from shardgraph.storage.buffer import PartitionBuffer
from shardgraph.storage.checkpoint import CheckpointStore
from shardgraph.storage.run import TrainedRun
from shardgraph.training.orders import BUCKET_ORDERS, bucket_order, lower_bound_loads, partition_loads
from shardgraph.training.trainer import train
from tests.conftest import REPO
from tests.test_train import checkpoint_arrays, kg_config, kg_dataset


@pytest.mark.parametrize(("partitions", "slots"), [(6, 2), (6, 3), (5, 4)])
def test_buffer_returns_exactly_what_was_written(tmp_path: Path, partitions: int, slots: int) -> None:
    dataset = kg_dataset(tmp_path, "umls", partitions)
    model = Model(kg_config(dataset), Dataset(dataset))
    buffer = PartitionBuffer(model, CheckpointStore(tmp_path / "run"), None, slots=slots, seed=0)
    rng = np.random.default_rng(0)
    expected: dict[int, torch.Tensor] = {}
    buckets = [(int(rng.integers(partitions)), int(rng.integers(partitions))) for _ in range(60)]
    try:
        for step, (i, j) in enumerate(buckets):
            keys = list(dict.fromkeys([("entity", i), ("entity", j)]))
            upcoming = [list(dict.fromkeys([("entity", a), ("entity", b)])) for a, b in buckets[step + 1 :]]
            buffer.ensure(keys, upcoming)
            for key in keys:
                table, state, count = buffer.table(key)
                if key[1] in expected:
                    torch.testing.assert_close(table[:count], expected[key[1]], rtol=0, atol=0)
                new = torch.randn(count, table.shape[1], generator=torch.Generator().manual_seed(step))
                table[:count] = new
                state[:count] = step
                expected[key[1]] = new.clone()
            buffer.mark_dirty(keys)
            if upcoming:
                buffer.prefetch(upcoming[0], upcoming[1:])
        buffer.checkpoint(epoch=1, buckets_done=0, extra={}, keep=1)
    finally:
        buffer.close()
    store = CheckpointStore(tmp_path / "run")
    manifest = store.manifest()
    assert manifest is not None
    for partition, values in expected.items():
        emb, _ = store.load_partition(store.partition_files(manifest, "entity", partition))
        np.testing.assert_array_equal(emb, values.numpy())
    assert buffer.loads > len(expected)  # partitions really were evicted and reloaded


def test_small_buffer_trains_exactly_like_all_in_memory(tmp_path: Path) -> None:
    dataset = kg_dataset(tmp_path, "kinship", 4)
    base = ["training.epochs=2", "training.bucket_order=inside_out"]
    train(kg_config(dataset, *base), run_dir=tmp_path / "all", progress=False)
    small = train(kg_config(dataset, *base, "storage.buffer_partitions=2"), run_dir=tmp_path / "two",
                  progress=False)
    assert small.history[0]["partition_loads"] > 4
    a, b = checkpoint_arrays(tmp_path / "all"), checkpoint_arrays(tmp_path / "two")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name", BUCKET_ORDERS.names())
@pytest.mark.parametrize(("n_lhs", "n_rhs"), [(1, 1), (4, 4), (7, 7), (3, 1), (1, 5)])
def test_orders_visit_every_bucket_once(name: str, n_lhs: int, n_rhs: int) -> None:
    for epoch in range(3):
        order = bucket_order(name, n_lhs, n_rhs, seed=1, epoch=epoch, buffer=3)
        assert sorted(order) == sorted(itertools.product(range(n_lhs), range(n_rhs)))


@pytest.mark.parametrize(("partitions", "buffer"), [(4, 2), (6, 3), (8, 4), (16, 4), (12, 5)])
def test_beta_order_loads_near_the_lower_bound(partitions: int, buffer: int) -> None:
    order = bucket_order("beta", partitions, partitions, seed=0, epoch=0, buffer=buffer)
    loads = partition_loads(order, buffer)
    bound = lower_bound_loads(partitions, buffer)
    assert bound <= loads <= 1.4 * bound + 1, (loads, bound)
    inside_out = partition_loads(bucket_order("inside_out", partitions, partitions, 0, 0), buffer)
    assert loads <= inside_out


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_storage(tmp_path: Path, dtype: str) -> None:
    dataset = kg_dataset(tmp_path, "umls", 2)
    full = train(kg_config(dataset), run_dir=tmp_path / "f32", progress=False)
    half = train(kg_config(dataset, f"storage.storage_dtype={dtype}"), run_dir=tmp_path / "half", progress=False)
    run = TrainedRun(half.path)
    assert run.storage_dtype("entity", 0) == dtype
    assert run.raw_embeddings("entity", 0).itemsize == 2
    assert abs(evaluate(half.path)["mrr"] - evaluate(full.path)["mrr"]) < 0.05


def test_memory_limit_refuses_with_the_knobs_to_turn(tmp_path: Path) -> None:
    dataset = kg_dataset(tmp_path, "nations", 1)
    with pytest.raises(TrainingError, match=r"above storage\.memory_limit_mb = 1\. To fit: import with more "
                                            r"partitions.*storage_dtype = \"float16\""):
        train(kg_config(dataset, "storage.memory_limit_mb=1"), run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_kill_during_write_back_never_corrupts_the_checkpoint(tmp_path: Path) -> None:
    dataset = kg_dataset(tmp_path, "kinship", 6)
    config = kg_config(dataset, "training.epochs=50", "storage.buffer_partitions=2", "model.dimension=64",
                       "training.checkpoint_every_buckets=3")
    from shardgraph.config import dump_config

    (tmp_path / "c.toml").write_text(dump_config(config))
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "shardgraph", "train", str(tmp_path / "c.toml"), "--out", str(run_dir),
               "--no-progress"]
    rng = np.random.default_rng(0)
    manifest_path = run_dir / "checkpoint" / "manifest.json"
    for attempt in range(4):
        before = json.loads(manifest_path.read_text())["version"] if manifest_path.exists() else None
        proc = subprocess.Popen(command + (["--resume"] if attempt else []), cwd=REPO,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # wait for a new checkpoint
            if manifest_path.exists() and json.loads(manifest_path.read_text())["version"] != before:
                break
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0, 1.5)))  # then somewhere in the next buckets' loads and write-backs
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        run = TrainedRun(run_dir, verify=True)  # every file of the manifest exists and matches its checksum
        for partition in range(6):
            run.raw_embeddings("entity", partition)
    manifest = json.loads((run_dir / "checkpoint" / "manifest.json").read_text())
    target = manifest["epoch"] + 1
    done = subprocess.run([*command, "--resume", "-p", f"training.epochs={target}"], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    final = json.loads((run_dir / "checkpoint" / "manifest.json").read_text())
    assert final["epoch"] == target and final["buckets_done"] == 0


class _DiskWatch:
    """Counts the embedding files in the run's checkpoint directory after every bucket."""

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir / "checkpoint"
        self.most = 0

    def on_train_begin(self, trainer: object) -> None: ...
    def on_epoch_begin(self, epoch: int, buckets: int, edges: int) -> None: ...
    def on_progress(self, edges_done: int) -> None: ...
    def on_epoch_end(self, stats: object) -> None: ...
    def on_train_end(self, run: object) -> None: ...

    def on_bucket_end(self, stats: object) -> None:
        self.most = max(self.most, len(list(self.root.rglob("*.emb.npy"))))


def test_partitions_swapped_out_between_checkpoints_leave_one_file_each(tmp_path: Path) -> None:
    """Disk stays at the kept checkpoints plus one working copy of each partition: a partition evicted
    several times between two checkpoints replaces its previous working file instead of adding one."""
    dataset = kg_dataset(tmp_path, "kinship", 8)
    watch = _DiskWatch(tmp_path / "run")
    run = train(kg_config(dataset, "training.epochs=2", "storage.buffer_partitions=2", "training.keep_checkpoints=2"),
                run_dir=tmp_path / "run", progress=False, callbacks=[watch])  # type: ignore[list-item]
    assert all(h["partition_loads"] > 2 * 8 for h in run.history)  # partitions really were evicted repeatedly
    assert 8 < watch.most <= 3 * 8  # two kept checkpoints + one working copy
    assert len(list((tmp_path / "run" / "checkpoint").rglob("*.emb.npy"))) <= 2 * 8
    evaluate(run.path, split="test")  # the files the last checkpoint names are all there


SHARED_ZEROS_PROBE = """
import sys, torch
from shardgraph.storage.buffer import shared_zeros
def rss(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1]) * 1024
dirty = torch.full((1 << 20,), 7.0)  # freed below: an allocation that reuses it holds sevens
del dirty
before = rss("VmRSS:")
table = shared_zeros((1 << 20, 64), torch.float32)  # 256 MiB
assert table.is_shared() and bool((table == 0).all()) and table.shape == (1 << 20, 64)
print((rss("VmHWM:") - before) / table.nbytes)
"""


def test_shared_tables_are_written_once_not_copied_from_a_private_table() -> None:
    """torch.zeros(...).share_memory_() holds a private table and its shared copy at once: twice
    the tables at the start of every training run."""
    out = subprocess.run([sys.executable, "-c", SHARED_ZEROS_PROBE], capture_output=True, text=True, cwd=REPO,
                         check=True)
    assert float(out.stdout) < 1.3, out.stdout  # the shared table itself, not two of it
