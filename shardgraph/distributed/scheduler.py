"""Bucket scheduling for several trainers, over the c10d store of torch.distributed.

The store holds, per epoch, the set of trained buckets, the bucket each trainer is on, the
partitions each trainer holds, and the files of the latest version of every partition. A
mutex (compare-and-set on one key) makes reading and updating that state atomic. A trainer
takes a bucket whose partitions no other trainer holds, preferring buckets that reuse the
partitions it already holds; partitions it lets go are written to the shared run directory
first and their new files published, so the next holder loads the latest version. Every
bucket is trained once per epoch; the end of an epoch is a barrier.

Partitions of unpartitioned entity types (and the relation parameters) are not locked:
every trainer trains its own copy (see shardgraph.distributed.launch for how the copies are
kept in step).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import torch.distributed as dist

from shardgraph.config import Config
from shardgraph.storage.buffer import PartitionBuffer, PartitionKey
from shardgraph.storage.checkpoint import PartitionFiles
from shardgraph.training.callbacks import BucketStats
from shardgraph.training.orders import Bucket, bucket_order
from shardgraph.training.trainer import BucketScheduler

log = logging.getLogger(__name__)

FREE = "free"
POLL_S = 0.01


class StoreMutex:
    """A mutex over a c10d store key (compare-and-set), held with `with`."""

    def __init__(self, store: dist.Store, key: str, owner: str) -> None:
        self.store, self.key, self.owner = store, key, owner.encode()

    def initialize(self) -> None:
        self.store.set(self.key, FREE)

    def __enter__(self) -> StoreMutex:
        delay = POLL_S / 10
        while self.store.compare_set(self.key, FREE, self.owner.decode()) != self.owner:
            time.sleep(delay)
            delay = min(POLL_S, delay * 2)
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.set(self.key, FREE)


class DistributedScheduler(BucketScheduler):
    """Hands out buckets so that no two trainers hold the same partition at the same time."""

    def __init__(self, config: Config, store: dist.Store, rank: int, world_size: int, n_lhs: int, n_rhs: int,
                 partitioned: Callable[[Bucket], list[PartitionKey]], barrier: Callable[[], None]) -> None:
        self.config = config
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self.n_lhs, self.n_rhs = n_lhs, n_rhs
        self.partitioned = partitioned  # the lockable (entity type, partition) keys of a bucket
        self.barrier = barrier
        self.mutex = StoreMutex(store, "mutex", str(rank))
        self.epoch = -1
        self.order: list[Bucket] = []
        self.held: set[PartitionKey] = set()
        self.buffer: PartitionBuffer | None = None
        self.position = 0

    def attach(self, buffer: PartitionBuffer) -> None:
        """The buffer whose partitions are exchanged (set by the trainer before the first epoch)."""
        self.buffer = buffer
        # the files a trainer writes are published to the others and committed by rank 0's manifests:
        # only the run's garbage collection at a commit may delete them, never the trainer that wrote them
        buffer.discard_superseded = False

    # ------------------------------------------------------------------ state in the store
    def _key(self, name: str) -> str:
        return f"epoch{self.epoch}/{name}"

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.store.get(self._key("state")))
        return state

    def _save(self, state: dict[str, Any]) -> None:
        self.store.set(self._key("state"), json.dumps(state))

    # ------------------------------------------------------------------ epochs
    def start_epoch(self, epoch: int, first: int) -> int:
        self.epoch = epoch
        t = self.config.training
        self.order = bucket_order(t.bucket_order, self.n_lhs, self.n_rhs, t.seed, epoch, 2)
        if self.rank == 0:
            if epoch == 0 or not self.store.check([f"epoch{epoch - 1}/state"]):
                self.mutex.initialize()
            self._save({"done": [list(b) for b in self.order[:first]], "taken": {}, "held": {}})
        self.barrier()
        self.position = first
        return len(self.order)

    def acquire(self) -> tuple[int, Bucket] | None:
        while True:
            with self.mutex:
                state = self._state()
                done = {tuple(b) for b in state["done"]}
                taken = {tuple(v) for v in state["taken"].values()}
                remaining = [b for b in self.order if b not in done and b not in taken]
                if not remaining:
                    break
                held_by_others = {tuple(k) for r, keys in state["held"].items() if int(r) != self.rank
                                  for k in keys}
                best: tuple[int, int, Bucket] | None = None
                for position, bucket in enumerate(self.order):
                    if bucket in done or bucket in taken:
                        continue
                    keys = set(self.partitioned(bucket))
                    if keys & held_by_others:
                        continue
                    reuse = len(keys & self.held)
                    score = (-reuse, position)
                    if best is None or score < best[:2]:
                        best = (*score, bucket)
                if best is not None:
                    bucket = best[2]
                    keys = set(self.partitioned(bucket))
                    let_go = self.held - keys
                    self._publish(let_go)  # write back before anyone else may take them
                    self.held = keys
                    state["held"][str(self.rank)] = sorted(self.held)
                    state["taken"][str(self.rank)] = list(bucket)
                    self._save(state)
                    self._refresh(keys)
                    self.position = self.order.index(bucket)
                    return self.order.index(bucket), bucket
                if self.held:
                    # everything left needs partitions others hold: let ours go so that nobody waits forever
                    self._publish(self.held)
                    self.held = set()
                    state["held"].pop(str(self.rank), None)
                    self._save(state)
            time.sleep(POLL_S)
        self._release_all()
        return None

    def release(self, index: int, bucket: Bucket, stats: BucketStats) -> None:
        with self.mutex:
            state = self._state()
            state["done"].append(list(bucket))
            state["taken"].pop(str(self.rank), None)
            self._save(state)

    def _release_all(self) -> None:
        with self.mutex:
            self._publish(self.held)
            self.held = set()
            state = self._state()
            state["held"].pop(str(self.rank), None)
            self._save(state)

    def end_epoch(self) -> None:
        self.barrier()

    def buckets_done(self) -> int:
        return len(self._state()["done"]) if self.epoch >= 0 else 0

    def upcoming(self) -> list[Bucket]:
        return []

    # ------------------------------------------------------------------ partition exchange
    def _publish(self, keys: set[PartitionKey]) -> None:
        """Write back partitions this trainer changed and publish their files; forget local copies."""
        assert self.buffer is not None
        for key in sorted(keys):
            if key in self.buffer.dirty and key in self.buffer.resident:
                self.buffer.write_back(key)
                files = self.buffer.files[key[0]][key[1]]
                self.store.set(self._partition_key(key), json.dumps(files.to_dict()))
            self.buffer.forget(key)

    def _refresh(self, keys: set[PartitionKey]) -> None:
        """Point the buffer at the latest published files of partitions it is about to use."""
        assert self.buffer is not None
        for key in keys:
            name = self._partition_key(key)
            if self.store.check([name]):
                files = PartitionFiles(**json.loads(self.store.get(name)))
                if self.buffer.files[key[0]].get(key[1]) != files:
                    self.buffer.forget(key)
                    self.buffer.files[key[0]][key[1]] = files

    def _partition_key(self, key: PartitionKey) -> str:
        return f"partition/{key[0]}/{key[1]}"

    def latest_files(self, keys: list[PartitionKey]) -> dict[PartitionKey, PartitionFiles]:
        out = {}
        for key in keys:
            name = self._partition_key(key)
            if self.store.check([name]):
                out[key] = PartitionFiles(**json.loads(self.store.get(name)))
        return out
