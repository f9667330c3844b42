"""The partition buffer: a fixed number of shared-memory slots that hold the partitions in use.

Slots are allocated once, in shared memory, before the workers start, and handed to them
once. While a bucket trains, the I/O thread prepares the next one: for each partition the
next bucket needs that is not resident, it picks a slot whose partition the current bucket
does not use (the one needed furthest in the future), writes that partition back if it
changed, and loads the new one into the slot. A bucket waits only for I/O that could not
have started earlier. With as many slots as partitions, everything stays in memory and
writes happen only at checkpoints.

Write-backs go to new versioned checkpoint files (see storage.checkpoint), so the last
complete checkpoint is never touched; the partition files are the checkpoint, there is no
second copy at save time.

A partition that has never been written starts from normal(0, init_scale) drawn from a
generator seeded by (seed, type, partition), so it needs no file until it is trained.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shardgraph.model.model import Model
from shardgraph.storage.checkpoint import TORCH_DTYPES, CheckpointStore, PartitionFiles, from_numpy

log = logging.getLogger(__name__)

PartitionKey = tuple[str, int]  # (entity type, partition)


@dataclass
class SharedTables:
    """Everything the workers share with the trainer. Sent to each worker once, at start."""

    slots: dict[str, list[Tensor]]  # type -> slot tables (capacity, D), storage dtype
    slot_state: dict[str, list[Tensor]]  # type -> (capacity,) float32 Adagrad accumulators
    relations: dict[str, Tensor]
    relation_state: dict[str, Tensor]
    bias: dict[str, Tensor]  # type -> (D,) global vector (zeros, unused without model.global_bias)
    bias_state: dict[str, Tensor]


def init_partition(model: Model, entity_type: str, partition: int, out: Tensor, seed: int) -> None:
    """Fill `out` (rows, D) with the deterministic initial embeddings of a partition."""
    spec = model.entity_types[entity_type]
    state = np.random.SeedSequence([seed, spec.index, partition, 0x1A17]).generate_state(1, np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state >> np.uint64(1)))
    block = 1 << 16  # rows at a time: a partition of gigabytes needs no second copy of itself
    for start in range(0, out.shape[0], block):
        rows = out[start : start + block]
        rows.copy_(torch.randn(rows.shape, generator=generator).mul_(model.config.model.init_scale))


def shared_zeros(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """Zeros in shared memory, written there only. torch.zeros(...).share_memory_() fills a private
    tensor and copies it: both are resident at once (twice the tables at the start of training).
    An empty tensor's pages are not touched yet, so copying it reads the kernel's zero page."""
    tensor = torch.empty(shape, dtype=dtype)
    tensor.share_memory_()
    return tensor.zero_()  # the copy holds whatever the allocator reused where it was not fresh


def slot_count(partitions: int, buffer_partitions: int) -> int:
    """Slots of a type: 1 for an unpartitioned type, else the buffer size (0 = all partitions)."""
    if partitions == 1:
        return 1
    return partitions if buffer_partitions == 0 else min(max(2, buffer_partitions), partitions)


class PartitionBuffer:
    """Shared-memory slots for partitions, loaded from and written back to a CheckpointStore."""

    def __init__(self, model: Model, store: CheckpointStore, manifest: Mapping[str, Any] | None, *,
                 slots: int, seed: int, storage_dtype: str = "float32", prefetch: bool = True) -> None:
        self.model = model
        self.store = store
        self.seed = seed
        self.storage_dtype = TORCH_DTYPES[storage_dtype]
        self.files: dict[str, dict[int, PartitionFiles]] = {t: {} for t in model.entity_types}
        if manifest is not None:
            for entity_type, parts in manifest["partitions"].items():
                for part, entry in parts.items():
                    self.files[entity_type][int(part)] = PartitionFiles(**entry)
        # files written since the last commit: no manifest names them, so a newer write-back of the same
        # partition makes them garbage at once (deleted then, not at the next commit: a partition evicted
        # k times between two checkpoints would otherwise hold k copies on disk)
        self.uncommitted: set[str] = set()
        self.discard_superseded = True  # off where other processes commit this buffer's files (distributed)
        table_slots: dict[str, list[Tensor]] = {}
        state_slots: dict[str, list[Tensor]] = {}
        self.free: dict[str, list[int]] = {}
        for name, spec in model.entity_types.items():
            count = slot_count(spec.partitions, slots if slots < spec.partitions else 0)
            capacity = max(spec.partition_counts) if spec.partition_counts else 0
            table_slots[name] = [shared_zeros((capacity, spec.dim), self.storage_dtype) for _ in range(count)]
            state_slots[name] = [shared_zeros((capacity,), torch.float32) for _ in range(count)]
            self.free[name] = list(range(count))[::-1]
        relations = model.init_relation_params()
        biases = {name: torch.zeros(spec.dim) for name, spec in model.entity_types.items()}
        relation_state = {k: torch.zeros_like(v) for k, v in relations.items()}
        bias_state = {k: torch.zeros_like(v) for k, v in biases.items()}
        if manifest is not None:
            saved = store.load_relations(manifest)
            for group, prefix in ((relations, "rel/"), (relation_state, "relstate/"), (biases, "bias/"),
                                  (bias_state, "biasstate/")):
                for key in group:
                    if prefix + key in saved:
                        group[key] = torch.from_numpy(saved[prefix + key]).float()
        for group in (relations, relation_state, biases, bias_state):
            for tensor in group.values():
                tensor.share_memory_()
        self.shared = SharedTables(table_slots, state_slots, relations, relation_state, biases, bias_state)
        self.resident: dict[PartitionKey, int] = {}
        self.dirty: set[PartitionKey] = set()
        self.in_use: set[PartitionKey] = set()
        self.loads = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shardgraph-io") if prefetch else None
        self._pending: dict[PartitionKey, tuple[int, Future[bool]]] = {}

    # ------------------------------------------------------------------ access
    def table(self, key: PartitionKey) -> tuple[Tensor, Tensor, int]:
        """(embeddings, state, live rows) of a resident partition."""
        entity_type, partition = key
        slot = self.resident[key]
        count = self.model.entity_types[entity_type].partition_counts[partition]
        return self.shared.slots[entity_type][slot], self.shared.slot_state[entity_type][slot], count

    def slot_map(self, keys: Iterable[PartitionKey]) -> dict[PartitionKey, int]:
        return {key: self.resident[key] for key in keys}

    # ------------------------------------------------------------------ loading
    def ensure(self, keys: Sequence[PartitionKey], upcoming: Sequence[Sequence[PartitionKey]] = ()) -> None:
        """Make `keys` resident (the bucket about to train), evicting what is needed furthest ahead."""
        self.in_use = set(keys)
        self._settle()
        for key in keys:
            if key in self.resident:
                continue
            slot = self._take_slot(key[0], avoid=set(keys), upcoming=upcoming, background=False)
            self._finish_load(key, slot, self._load(key, slot))

    def _settle(self) -> None:
        """Wait for the loads started by prefetch; their partitions become resident."""
        for key, (slot, future) in list(self._pending.items()):
            self._finish_load(key, slot, future.result())
        self._pending.clear()

    def _finish_load(self, key: PartitionKey, slot: int, fresh: bool) -> None:
        self.resident[key] = slot
        if fresh:
            self.dirty.add(key)  # initial values exist only in memory

    def prefetch(self, keys: Sequence[PartitionKey], upcoming: Sequence[Sequence[PartitionKey]] = ()) -> None:
        """Start preparing the next bucket's partitions on the I/O thread, without touching the
        partitions the current bucket trains on."""
        if self._executor is None:
            return
        for key in keys:
            if key in self.resident or key in self._pending:
                continue
            avoid = self.in_use | set(keys)
            slot = self._take_slot(key[0], avoid=avoid, upcoming=[keys, *upcoming], background=True)
            if slot is None:
                return  # every slot is in use: load when the bucket starts
            self._pending[key] = (slot, self._executor.submit(self._load, key, slot))

    def _take_slot(self, entity_type: str, avoid: set[PartitionKey], upcoming: Sequence[Sequence[PartitionKey]],
                   background: bool) -> Any:
        """A free slot, or the slot of an evicted partition (written back first if it changed)."""
        if self.free[entity_type]:
            return self.free[entity_type].pop()
        candidates = [k for k in self.resident if k[0] == entity_type and k not in avoid]
        if not candidates:
            if background:
                return None
            raise RuntimeError(f"no partition of {entity_type!r} can be evicted (buffer too small)")

        def next_use(key: PartitionKey) -> int:
            for step, needs in enumerate(upcoming):
                if key in needs:
                    return step
            return len(upcoming) + 1

        victim = max(candidates, key=next_use)
        slot = self.resident.pop(victim)
        if victim in self.dirty:
            self.dirty.discard(victim)
            if background and self._executor is not None:
                # queued before the load of the new partition on the same (single) I/O thread
                self._executor.submit(self._write_slot, victim, slot)
            else:
                self._write_slot(victim, slot)
        return slot

    def _load(self, key: PartitionKey, slot: int) -> bool:
        """Copy a partition into a slot (initial values if it has no file yet); True if fresh."""
        entity_type, partition = key
        table = self.shared.slots[entity_type][slot]
        state = self.shared.slot_state[entity_type][slot]
        count = self.model.entity_types[entity_type].partition_counts[partition]
        with self._lock:
            files = self.files[entity_type].get(partition)
        if files is None:
            init_partition(self.model, entity_type, partition, table[:count], self.seed)
            state[:count].zero_()
        else:
            if TORCH_DTYPES[files.dtype] == table.dtype and files.rows == count:
                self.store.read_partition_into(files, table[:count], state[:count])
            else:  # stored in another dtype: convert on the way in
                arrays = self.store.load_partition(files, verify=True, mmap=True)
                table[:count].copy_(from_numpy(arrays[0], files.dtype))
                state[:count].copy_(from_numpy(arrays[1], "float32"))
        with self._lock:
            self.loads += 1
        return files is None

    # ------------------------------------------------------------------ writing
    def mark_dirty(self, keys: Iterable[PartitionKey]) -> None:
        self.dirty.update(keys)

    def _write_slot(self, key: PartitionKey, slot: int) -> None:
        entity_type, partition = key
        count = self.model.entity_types[entity_type].partition_counts[partition]
        files = self.store.write_partition(entity_type, partition, self.shared.slots[entity_type][slot][:count],
                                           self.shared.slot_state[entity_type][slot][:count])
        with self._lock:
            old = self.files[entity_type].get(partition)
            self.files[entity_type][partition] = files
            stale = old if old is not None and old.embeddings in self.uncommitted and self.discard_superseded else None
            if stale is not None:
                self.uncommitted.discard(stale.embeddings)
            self.uncommitted.add(files.embeddings)
        if stale is not None:
            self.store.discard(stale)

    def forget(self, key: PartitionKey) -> None:
        """Drop a resident partition without writing it (its latest version is elsewhere)."""
        self._settle()
        slot = self.resident.pop(key, None)
        if slot is not None:
            self.free[key[0]].append(slot)
        self.dirty.discard(key)

    def write_back(self, key: PartitionKey) -> None:
        self._write_slot(key, self.resident[key])
        self.dirty.discard(key)

    def drain(self) -> None:
        """Wait until the I/O thread is idle (queued write-backs and loads done)."""
        self._settle()
        if self._executor is not None:
            self._executor.submit(lambda: None).result()

    def relation_tensors(self) -> dict[str, Tensor]:
        out = {}
        for group, prefix in ((self.shared.relations, "rel/"), (self.shared.relation_state, "relstate/"),
                              (self.shared.bias, "bias/"), (self.shared.bias_state, "biasstate/")):
            out.update({prefix + key: tensor for key, tensor in group.items()})
        return out

    def checkpoint(self, *, epoch: int, buckets_done: int, extra: Mapping[str, Any], keep: int) -> int:
        """Write every changed resident partition and the relation parameters, then commit."""
        self.drain()
        for key in sorted(self.dirty & set(self.resident)):
            self.write_back(key)
        for name, spec in self.model.entity_types.items():
            for partition in range(spec.partitions):
                if partition not in self.files[name]:
                    # never trained (e.g. an early mid-epoch checkpoint): write its initial values
                    init = torch.empty(spec.partition_counts[partition], spec.dim)
                    init_partition(self.model, name, partition, init, self.seed)
                    self.files[name][partition] = self.store.write_partition(
                        name, partition, init.to(self.storage_dtype), torch.zeros(init.shape[0]))
        relations = self.store.write_relations(self.relation_tensors())
        version = self.store.commit(epoch=epoch, buckets_done=buckets_done, partitions=self.files,
                                    relations=relations, extra=extra, keep=keep)
        with self._lock:
            self.uncommitted.clear()
        return version

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
        self._pending.clear()
