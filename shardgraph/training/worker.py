"""Training a bucket: the edge stream, batches, and the HOGWILD worker processes.

`train_task` is what trains: it streams its share of a bucket's edges from the memory-mapped
bucket file in chunks, shuffles each chunk, cuts it into batches of one group (relations
that can share negatives) and runs the batch step. With one worker it runs in the trainer
process; with several, each spawned worker runs it on its share of the bucket, all of them
updating the same shared-memory tables without locks. Where every batch takes the fused compiled
step (dot-product models: the walks' skip-gram), which runs without the interpreter lock, the
workers are threads of the trainer instead (`ThreadPool`): nothing to start, one copy of torch.

A bucket file keeps the order of the input (often sorted by source). So that a chunk, and the
batch negatives drawn from it, mixes edges from the whole bucket whatever that order, the
bucket is cut into small blocks, the blocks are permuted (seeded by epoch and bucket), worker
r takes every W-th block of the permutation, and a chunk gathers many random blocks.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp
from torch import Tensor

from shardgraph.config import Config, config_from_dict
from shardgraph.data.dataset import Dataset
from shardgraph.errors import TrainingError
from shardgraph.model.model import Model
from shardgraph.storage.buffer import PartitionKey, SharedTables
from shardgraph.training.step import BatchStep, Corrections, Table, fusable
from shardgraph.utils.arrays import unique_sorted
from shardgraph.utils.atomic import raise_if_interrupted
from shardgraph.utils.npy import NpyReader
from shardgraph.utils.process import die_with_parent

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class BucketTask:
    """Share `rank` of `shares` of one bucket's edges, for one worker."""

    epoch: int
    lhs: int
    rhs: int
    path: str  # the bucket's .npy file
    edges: int
    slots: dict[PartitionKey, int]  # where the bucket's partitions sit in the shared slots
    seed: int
    rank: int = 0
    shares: int = 1


BLOCKS_PER_SHARE = 64  # at least this many blocks per worker, so that each share spans the bucket
BLOCKS_PER_CHUNK = 1024  # at least this many blocks in a chunk, so that it mixes many parts of the bucket
MAX_BLOCK_EDGES = 1 << 12  # edges of a block: 48 KiB, still read sequentially


def share_chunks(task: BucketTask, chunk_edges: int) -> list[list[tuple[int, int]]]:
    """The (begin, end) row ranges of the task's share, grouped into chunks of at most ~chunk_edges.

    Every worker computes the same block permutation (seeded by the run's seed, the epoch and
    the bucket), so the shares are disjoint and cover the bucket.
    """
    block = max(1, min(MAX_BLOCK_EDGES, task.edges // (task.shares * BLOCKS_PER_SHARE),
                        chunk_edges // BLOCKS_PER_CHUNK))
    blocks = -(-task.edges // block)
    rng = np.random.default_rng([task.seed, task.epoch, task.lhs, task.rhs, 0x5EED])
    mine = rng.permutation(blocks)[task.rank :: task.shares]
    per_chunk = max(1, chunk_edges // block)
    return [sorted((int(b) * block, min(task.edges, (int(b) + 1) * block)) for b in mine[first : first + per_chunk])
            for first in range(0, len(mine), per_chunk)]


@dataclass
class TaskResult:
    loss: float
    edges: int
    seconds: float


def configure_torch(threads: int, keep_memory: bool = True) -> Callable[[], None]:
    """Threads per process; flush denormals (tiny gradients of freshly initialised embeddings
    otherwise hit the CPU's slow path for subnormal floats); and with `keep_memory` keep freed
    memory in the allocator, since every batch of the torch step allocates the same large score
    matrices again (the fused step allocates no such matrices: it returns them). Returns what puts
    the thread count and the denormal mode back as they were: training in the caller's own
    process must not leave its arithmetic flushing subnormals to zero afterwards."""
    threads_before = torch.get_num_threads()
    flushing_before = bool((torch.tensor(1e-38) * torch.tensor(1e-3)).item() == 0.0)
    torch.set_num_threads(max(1, threads))
    torch.set_flush_denormal(True)
    if keep_memory:
        keep_freed_memory()
    else:
        return_freed_memory()

    def restore() -> None:
        torch.set_num_threads(threads_before)
        torch.set_flush_denormal(flushing_before)

    return restore


def _mallopt(option: int, value: int) -> None:
    """glibc's mallopt; nothing where the C library is not glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(option, value)


def keep_freed_memory() -> None:
    """glibc: serve large allocations from the heap and never trim it, so the score matrices
    of each batch reuse the pages of the last one instead of faulting in fresh ones."""
    m_trim_threshold, m_mmap_max = -1, -4
    _mallopt(m_mmap_max, 0)
    _mallopt(m_trim_threshold, 2**31 - 1)


def return_freed_memory() -> None:
    """glibc: serve allocations above 1 MiB by mmap, so that the temporaries of partition I/O
    and checkpoints go back to the system when freed (for a process that does not train: the
    coordinator of the workers, worker threads of the fused step). glibc's default raises that
    threshold after the first large free, after which they stay resident in the heap for the rest
    of the run. Undoes keep_freed_memory."""
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4
    _mallopt(m_mmap_max, 65536)  # glibc's default
    _mallopt(m_mmap_threshold, 1 << 20)
    _mallopt(m_trim_threshold, 1 << 20)


class TrainingContext:
    """What a worker needs to train: the model, the batch step, the shared tables."""

    def __init__(self, config: Config, dataset: Dataset, shared: SharedTables, device: str = "cpu") -> None:
        self.config = config
        self.model = Model(config, dataset)
        self.shared = shared
        self.device = torch.device(device)
        self.step = BatchStep(self.model, config.training, shared.relations, shared.relation_state, self.device)
        self.group_of_relation = self.model.group_of_relation
        self.single_group = int(self.group_of_relation.max()) == 0 if len(self.group_of_relation) else True
        self.self_loops: dict[str, Tensor] = {}  # bucket file -> its self-loop keys (training.self_negatives)

    def table(self, key: PartitionKey, slots: dict[PartitionKey, int]) -> Table:
        entity_type, partition = key
        slot = slots[key]
        bias = self.shared.bias[entity_type] if self.config.model.global_bias else None
        bias_state = self.shared.bias_state[entity_type] if bias is not None else None
        return Table(self.shared.slots[entity_type][slot], self.shared.slot_state[entity_type][slot],
                     self.model.entity_types[entity_type].partition_counts[partition], bias, bias_state)

    def bucket_tables(self, task: BucketTask) -> tuple[dict[tuple[str, str], tuple[Table, Table]], Callable[[], None]]:
        """The tables of each (lhs type, rhs type) of a bucket, and a function that writes them back.

        On the CPU they are the shared tables themselves. On a GPU the bucket's partitions, the
        relation parameters and the biases are copied to the device for the bucket and copied
        back after it (the write-back function).
        """
        model = self.model
        tables: dict[tuple[str, str], tuple[Table, Table]] = {}
        cache: dict[PartitionKey, Table] = {}
        on_device = self.device.type != "cpu"
        copies: list[tuple[Tensor, Tensor]] = []

        def moved(tensor: Tensor | None) -> Tensor | None:
            if tensor is None or not on_device:
                return tensor
            copy = tensor.to(self.device)
            copies.append((tensor, copy))
            return copy

        for rel in model.relations:
            for key in ((rel.lhs, model.entity_types[rel.lhs].partition_of_bucket(task.lhs)),
                        (rel.rhs, model.entity_types[rel.rhs].partition_of_bucket(task.rhs))):
                if key not in cache:
                    shared = self.table(key, task.slots)
                    cache[key] = Table(moved(shared.embeddings[: shared.count]),  # type: ignore[arg-type]
                                       moved(shared.state[: shared.count]),  # type: ignore[arg-type]
                                       shared.count, moved(shared.bias), moved(shared.bias_state))
            lhs_key = (rel.lhs, model.entity_types[rel.lhs].partition_of_bucket(task.lhs))
            rhs_key = (rel.rhs, model.entity_types[rel.rhs].partition_of_bucket(task.rhs))
            tables[(rel.lhs, rel.rhs)] = (cache[lhs_key], cache[rhs_key])
        if on_device:
            self.step.relation_tables = {k: moved(v) for k, v in self.shared.relations.items()}  # type: ignore[misc]
            self.step.relation_state = {k: moved(v) for k, v in self.shared.relation_state.items()}  # type: ignore[misc]

        def write_back() -> None:
            for original, copy in copies:
                original.copy_(copy)

        return tables, write_back


def bucket_partitions(model: Model, lhs: int, rhs: int) -> list[PartitionKey]:
    """The (entity type, partition) pairs bucket (lhs, rhs) touches."""
    keys: dict[PartitionKey, None] = {}
    for rel in model.relations:
        keys[(rel.lhs, model.entity_types[rel.lhs].partition_of_bucket(lhs))] = None
        keys[(rel.rhs, model.entity_types[rel.rhs].partition_of_bucket(rhs))] = None
    return list(keys)


def iter_batches(edges: Tensor, group_of_relation: Tensor, single_group: bool, batch_size: int,
                 generator: torch.Generator) -> Iterator[Tensor]:
    """Batches (b, 3) of shuffled edges; every batch holds one group, batches of groups interleaved."""
    edges = edges.index_select(0, torch.randperm(edges.shape[0], generator=generator))
    if single_group:
        yield from edges.split(batch_size)
        return
    groups = group_of_relation[edges[:, 1]]
    order = torch.argsort(groups, stable=True)
    edges, groups = edges[order], groups[order]
    counts = torch.bincount(groups).tolist()
    batches = [b for part in edges.split(counts) if part.shape[0] for b in part.split(batch_size)]
    for index in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[index]


def sampling_corrections(context: TrainingContext, edges_file: NpyReader, task: BucketTask,
                         tables: dict[tuple[str, str], tuple[Table, Table]]) -> dict[tuple[str, str], Corrections]:
    """Per (lhs type, rhs type): the log of each entity's expected count among the negatives of
    one side of an edge, for training.sampling_correction.

    A chunk's batch negatives are the other edges' ends, so an entity of degree k in this
    range of E edges turns up about C·k/E times among C of them; each of the U uniform
    negatives is one of the partition's N entities: expected count C·k/E + U/N.
    """
    config = context.config.training
    model = context.model
    pairs = list(tables)
    pair_of_relation = np.array([pairs.index((rel.lhs, rel.rhs)) for rel in model.relations])
    degrees = {pair: (np.zeros(lhs.count, np.int64), np.zeros(rhs.count, np.int64))
               for pair, (lhs, rhs) in tables.items()}
    for ranges in share_chunks(task, config.edge_chunk_size):
        block = edges_file.read_ranges(ranges)
        of_edge = pair_of_relation[block[:, 1]] if len(pairs) > 1 else None
        for index, pair in enumerate(pairs):
            rows = block if of_edge is None else block[of_edge == index]
            lhs_degree, rhs_degree = degrees[pair]
            lhs_degree += np.bincount(rows[:, 0], minlength=len(lhs_degree))
            rhs_degree += np.bincount(rows[:, 2], minlength=len(rhs_degree))
    chunk = min(config.num_batch_negs, config.batch_size)
    out: dict[tuple[str, str], Corrections] = {}
    for pair, (lhs_degree, rhs_degree) in degrees.items():
        edges = max(1, int(lhs_degree.sum()))
        sides = []
        for degree in (lhs_degree, rhs_degree):
            expected = chunk * degree / edges + config.num_uniform_negs / max(1, len(degree))
            sides.append(torch.from_numpy(np.log(np.maximum(expected, 1e-30)).astype(np.float32)).to(context.device))
        out[pair] = (sides[0], sides[1])
    return out


def bucket_self_loops(context: TrainingContext, edges_file: NpyReader, path: str) -> Tensor:
    """Sorted keys entity * R + relation of the bucket's self-loops (h, r, h), for training.self_negatives:
    their entity is not a negative of its own query (h, r, ?). A bucket file does not change during a
    run, so it is read once per process."""
    if path not in context.self_loops:
        relations = len(context.model.relations)
        step = context.config.training.edge_chunk_size
        keys = []
        for begin in range(0, edges_file.rows, step):
            block = edges_file.read(begin, begin + step)
            loops = block[block[:, 0] == block[:, 2]]
            keys.append(loops[:, 0].astype(np.int64) * relations + loops[:, 1])
        found = unique_sorted(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
        context.self_loops[path] = torch.from_numpy(found).to(context.device)
    return context.self_loops[path]


def train_task(context: TrainingContext, task: BucketTask, progress: ProgressFn | None = None) -> TaskResult:
    """Train on the task's share of a bucket. Returns the summed loss and the edge count."""
    started = time.perf_counter()
    config = context.config.training
    model = context.model
    seed_seq = np.random.SeedSequence([config.seed, task.seed, task.epoch, task.lhs, task.rhs, task.rank])
    rng = np.random.default_rng(seed_seq)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    # plain reads, not a memory map: a pass over the bucket leaves no mapped pages in this process
    edges_file = NpyReader(task.path)
    loss_sum = 0.0
    done = 0
    tables, write_back = context.bucket_tables(task)
    corrections = sampling_corrections(context, edges_file, task, tables) if config.sampling_correction else {}
    self_loops = bucket_self_loops(context, edges_file, task.path) if config.self_negatives else None
    chunks = share_chunks(task, config.edge_chunk_size)
    for chunk_index in rng.permutation(len(chunks)):
        # kept in the file's int32 until each batch: widening the whole chunk at once costs fresh pages
        block = torch.from_numpy(edges_file.read_ranges(chunks[chunk_index]))
        if context.device.type != "cpu":
            block = block.to(context.device)
        for batch in iter_batches(block, context.group_of_relation, context.single_group, config.batch_size,
                                  generator):
            batch = batch.long()
            rel = model.relations[int(batch[0, 1])]
            lhs_table, rhs_table = tables[(rel.lhs, rel.rhs)]
            loss_sum += context.step.train_batch(lhs_table, rhs_table, batch[:, 0], batch[:, 1], batch[:, 2],
                                                 generator, corrections.get((rel.lhs, rel.rhs)), self_loops)
            done += batch.shape[0]
            if progress is not None:
                progress(done)
            if not np.isfinite(loss_sum):
                return TaskResult(float("nan"), done, time.perf_counter() - started)
    write_back()
    return TaskResult(loss_sum, done, time.perf_counter() - started)


# ----------------------------------------------------------------------------- processes


def _worker_main(rank: int, config_dict: dict[str, Any], dataset_path: str, shared: SharedTables, threads: int,
                 conn: Connection, progress: Tensor, trainer: int) -> None:
    """Entry point of a spawned worker: train the tasks it receives on `conn` until it gets None (or the
    trainer is gone), answering each on the same pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer decides when workers stop
    die_with_parent(trainer)  # a trainer killed with SIGKILL takes its workers with it, even mid-task
    configure_torch(threads)
    try:
        context = TrainingContext(config_from_dict(config_dict), Dataset(dataset_path), shared)
    except BaseException:
        conn.send(("error", rank, traceback.format_exc()))
        return
    conn.send(("ready", rank, None))
    while True:
        try:
            if not conn.poll(1.0):
                if os.getppid() != trainer:  # the trainer died (kill -9): do not linger
                    return
                continue
            task = conn.recv()
        except (EOFError, OSError):  # the trainer closed its end
            return
        if task is None:
            return
        try:
            progress[rank] = 0

            def report(done: int) -> None:
                progress[rank] = done

            result = train_task(context, task, report)
            conn.send(("done", rank, result))
        except BaseException:
            conn.send(("error", rank, traceback.format_exc()))


def _died(process: Any) -> TrainingError:
    return TrainingError(f"worker {process.name} died (exit code {process.exitcode}); see the log above. "
                         "Out of memory?")


class WorkerPool:
    """Spawned worker processes that train the parts of a bucket in parallel (HOGWILD).

    Each worker talks to the trainer over its own pipe. Pipes, not multiprocessing queues: a queue
    holds named POSIX semaphores (/dev/shm/sem.mp-*) that only a clean exit unlinks, so a process
    group killed with SIGKILL would leave them behind; a pipe leaves nothing."""

    def __init__(self, workers: int, threads: int, config: Config, dataset_path: str, shared: SharedTables) -> None:
        ctx = mp.get_context("spawn")
        self.workers = workers
        self.progress = torch.zeros(workers, dtype=torch.int64).share_memory_()
        pipes = [ctx.Pipe(duplex=True) for _ in range(workers)]
        self.conns: list[Connection] = [ours for ours, _ in pipes]
        self.processes = [
            ctx.Process(target=_worker_main, name=f"shardgraph-worker-{rank}", daemon=True,
                        args=(rank, config.to_dict(), dataset_path, shared, threads, theirs, self.progress,
                              os.getpid()))
            for rank, (_, theirs) in enumerate(pipes)
        ]
        try:
            for process in self.processes:
                process.start()
        finally:
            for _, theirs in pipes:
                theirs.close()  # the workers hold their ends; a dead worker's pipe then reads EOF
        ready = 0
        while ready < workers:
            for kind, rank, payload in self._receive(timeout=0.5):
                if kind == "error":
                    self.close()
                    raise TrainingError(f"worker {rank} failed to start:\n{payload}")
                ready += 1

    def _receive(self, timeout: float) -> list[tuple[str, int, Any]]:
        """Messages that arrive within `timeout` s (maybe none); TrainingError naming a worker that died."""
        messages = []
        for conn in wait(self.conns, timeout=timeout):
            assert isinstance(conn, Connection)
            try:
                messages.append(conn.recv())
            except (EOFError, OSError):
                process = self.processes[self.conns.index(conn)]
                process.join(timeout=1.0)
                raise _died(process) from None
        if not messages:
            dead = [p for p in self.processes if not p.is_alive()]
            if dead:
                raise _died(dead[0])
        return messages

    def run(self, tasks: list[BucketTask], progress: ProgressFn | None = None) -> list[TaskResult]:
        """Run one task per worker and wait for all of them, reporting summed progress."""
        for task in tasks:
            self.conns[task.rank].send(task)
        results: list[TaskResult] = []
        pending = len(tasks)
        while pending:
            messages = self._receive(timeout=0.5)
            if not messages:
                raise_if_interrupted()
                if progress is not None:
                    progress(int(self.progress.sum()))
                continue
            for kind, rank, payload in messages:
                if kind == "error":
                    raise TrainingError(f"worker {rank} failed:\n{payload}")
                results.append(payload)
                pending -= 1
        return results

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        deadline = time.time() + 5
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.time()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=2)
        for conn in self.conns:
            conn.close()


class _Stopped(Exception):
    """Raised in a worker thread, at its next batch, once the pool is told to stop."""


class ThreadPool:
    """HOGWILD workers as threads of the trainer, for models whose every batch is the fused compiled step
    (BatchStep.fused: it releases the interpreter lock for the whole batch). Same interface as WorkerPool."""

    def __init__(self, workers: int, config: Config, dataset: Dataset, shared: SharedTables) -> None:
        self.workers = workers
        self.contexts = [TrainingContext(config, dataset, shared) for _ in range(workers)]
        self.progress = [0] * workers
        self.stop = threading.Event()
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="shardgraph-worker")

    def _task(self, task: BucketTask) -> TaskResult:
        def report(done: int) -> None:
            self.progress[task.rank] = done
            if self.stop.is_set():
                raise _Stopped

        self.progress[task.rank] = 0
        return train_task(self.contexts[task.rank], task, report)

    def run(self, tasks: list[BucketTask], progress: ProgressFn | None = None) -> list[TaskResult]:
        """Run one task per worker thread and wait for all of them, reporting summed progress."""
        futures: list[Future[TaskResult]] = [self.executor.submit(self._task, task) for task in tasks]
        try:
            while True:
                done, pending = wait_futures(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    raise TrainingError(f"a worker thread failed: {failed[0].exception()!r}") \
                        from failed[0].exception()
                if not pending:
                    return [f.result() for f in futures]
                raise_if_interrupted()
                if progress is not None:
                    progress(sum(self.progress))
        except BaseException:
            self.stop.set()  # the others stop at their next batch
            wait_futures(futures)
            self.stop.clear()
            raise

    def close(self) -> None:
        self.stop.set()
        self.executor.shutdown(wait=True, cancel_futures=True)


def fused_training(config: Config, model: Model) -> bool:
    """Whether every batch takes the fused compiled step (float32 or bfloat16 tables on the CPU, a model
    it computes, the kernel built)."""
    return (config.storage.storage_dtype in ("float32", "bfloat16")
            and fusable(model, config.training, torch.device(config.training.device)))
