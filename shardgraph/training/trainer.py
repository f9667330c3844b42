"""The training loop: epochs of buckets handed out by a scheduler, checkpoints, resume.

    run = shardgraph.train(config)             # or: shardgraph train CONFIG

The loop does not know whether it runs alone or as one of many trainers: a
BucketScheduler hands it buckets (the local one walks the epoch's bucket order; the
distributed one takes buckets under a lock shared by all trainers).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from shardgraph import __version__
from shardgraph.config import Config, dump_config, load_config
from shardgraph.data.dataset import Dataset
from shardgraph.errors import CheckpointError, ConfigError, TrainingError
from shardgraph.model.model import Model
from shardgraph.storage.buffer import PartitionBuffer
from shardgraph.storage.checkpoint import CheckpointStore, describe
from shardgraph.storage.run import RUN_FORMAT, RUN_FORMAT_VERSION
from shardgraph.training.callbacks import (
    BucketStats,
    Callback,
    EpochStats,
    EvalCallback,
    LogCallback,
    MetricsLogCallback,
    ProgressCallback,
)
from shardgraph.training.memory import check_memory, plan_memory
from shardgraph.training.orders import Bucket, bucket_order
from shardgraph.training.worker import (
    BucketTask,
    TaskResult,
    ThreadPool,
    TrainingContext,
    WorkerPool,
    bucket_partitions,
    configure_torch,
    fused_training,
    return_freed_memory,
    train_task,
)
from shardgraph.utils.atomic import atomic_write_text, raise_if_interrupted, terminate_as_interrupt
from shardgraph.utils.lock import exclusive
from shardgraph.utils.memory import PeakMemory

log = logging.getLogger("shardgraph.train")

# config sections whose change makes a checkpoint unusable for --resume
SHAPE_KEYS = ("model", "entities", "relations")


@dataclass
class Run:
    """A trained run directory, and what this invocation did."""

    path: Path
    config: Config
    epochs: int  # epochs complete in the run directory
    edges: int = 0  # edges trained by this invocation
    train_s: float = 0.0
    peak_rss_mb: float = 0.0
    planned_mb: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def edges_per_sec(self) -> float:
        return self.edges / self.train_s if self.train_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "edges": self.edges, "train_s": round(self.train_s, 3),
                "edges_per_sec": round(self.edges_per_sec, 1), "peak_rss_mb": self.peak_rss_mb,
                "planned_mb": round(self.planned_mb, 1), "run_dir": str(self.path)}


# ----------------------------------------------------------------------------- scheduling


class BucketScheduler(ABC):
    """Hands buckets to the training loop."""

    @abstractmethod
    def start_epoch(self, epoch: int, first: int) -> int:
        """Begin an epoch whose first `first` buckets are already done; returns the epoch's bucket count."""

    @abstractmethod
    def acquire(self) -> tuple[int, Bucket] | None:
        """The next bucket to train (its index in the epoch), or None when the epoch is done."""

    def release(self, index: int, bucket: Bucket, stats: BucketStats) -> None:
        """A bucket is trained."""

    def upcoming(self) -> list[Bucket]:
        """Buckets this trainer will probably train next (for prefetching and eviction)."""
        return []

    def end_epoch(self) -> None:
        """All buckets of the epoch are trained (a barrier when distributed)."""

    def buckets_done(self) -> int:
        """Buckets of the current epoch that are trained (what a mid-epoch checkpoint records)."""
        return 0

    # who this trainer is among several (one, here); a scheduler that coordinates several trainers
    # sets these, so that the loop reads the same with one process or many
    partial_checkpoints = True  # can a checkpoint be taken in the middle of an epoch?
    prepares_run_dir = True  # this trainer creates (or reopens) the run directory; the others join it
    run_files_tag = ""  # tells apart the files (partitions, metrics) of trainers sharing a run directory
    trainers_on_this_machine = 1  # they share its cores
    evaluates = True  # this trainer runs the periodic evaluation (training.eval_every)

    def attach(self, buffer: PartitionBuffer) -> None:
        """The partition buffer of this trainer, before the first epoch."""

    def after_epoch(self, buffer: PartitionBuffer) -> bool:
        """Called when the epoch is trained everywhere; True if this trainer writes the checkpoint."""
        return True

    def after_checkpoint(self) -> None:
        """Called after the epoch's checkpoint is written (by whichever trainer writes it)."""


class LocalScheduler(BucketScheduler):
    """Walks the seeded bucket order of each epoch."""

    def __init__(self, config: Config, n_lhs: int, n_rhs: int, buffer: int) -> None:
        self.config = config
        self.n_lhs, self.n_rhs, self.buffer = n_lhs, n_rhs, buffer
        self.order: list[Bucket] = []
        self.position = 0

    def start_epoch(self, epoch: int, first: int) -> int:
        t = self.config.training
        self.order = bucket_order(t.bucket_order, self.n_lhs, self.n_rhs, t.seed, epoch, self.buffer)
        self.position = first
        return len(self.order)

    def acquire(self) -> tuple[int, Bucket] | None:
        if self.position >= len(self.order):
            return None
        index = self.position
        self.position += 1
        return index, self.order[index]

    def upcoming(self) -> list[Bucket]:
        return self.order[self.position :]

    def buckets_done(self) -> int:
        return self.position


# ----------------------------------------------------------------------------- run directory


def resolve_workers(config: Config, trainers_here: int = 1) -> tuple[int, int]:
    """(worker processes, torch threads per worker) for this machine, shared by `trainers_here`
    trainers (several when torchrun starts more than one per machine): never more threads than cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = max(1, cores // trainers_here)
    t = config.training
    workers = t.workers or cores
    if t.device == "cuda":
        workers = 1
    threads = t.threads or max(1, cores // workers)
    return workers, threads


def _shape_of(config: Config) -> dict[str, Any]:
    plain = config.to_dict()
    return {key: plain[key] for key in SHAPE_KEYS} | {"storage_dtype": plain["storage"]["storage_dtype"]}


def prepare_run_dir(config: Config, dataset: Dataset, run_dir: Path, resume: bool,
                    overwrite: bool) -> tuple[CheckpointStore, dict[str, Any] | None]:
    """Create (or reopen with --resume) a run directory; returns its store and last checkpoint."""
    existing = (run_dir / "checkpoint" / "manifest.json").exists()
    if existing and not resume:
        if not overwrite:
            raise CheckpointError(f"{run_dir} already holds a trained run; pass --resume to continue it or "
                                  "--overwrite to start again.")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    store = CheckpointStore(run_dir)
    manifest = store.resumable() if resume else None
    if manifest is not None:
        saved = load_config(run_dir / "config.toml")
        if _shape_of(saved) != _shape_of(config):
            changed = [k for k in _shape_of(config) if _shape_of(saved)[k] != _shape_of(config)[k]]
            raise ConfigError(f"--resume: the config changes {', '.join(changed)} of the run in {run_dir}; "
                              "a checkpoint can only resume with the same model.")
        info = json.loads((run_dir / "run.json").read_text())
        if Path(info["dataset"]).resolve() != dataset.path.resolve():
            log.warning(f"resuming {run_dir} on dataset {dataset.path}, it was trained on {info['dataset']}")
        log.info(f"resuming from {describe(manifest)}")
    else:
        store.collect_garbage()
        for stale in ("metrics.jsonl",):
            (run_dir / stale).unlink(missing_ok=True)
    atomic_write_text(run_dir / "config.toml", dump_config(config, commented=False))
    atomic_write_text(run_dir / "run.json", json.dumps({
        "format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "shardgraph_version": __version__,
        "dataset": str(dataset.path.resolve()),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }, indent=1))
    return store, manifest


def default_run_dir(config: Config) -> Path:
    return Path("runs") / Path(config.data.dataset).name


# ----------------------------------------------------------------------------- the loop


class Trainer:
    """Owns the partition buffer, the workers and the callbacks of one training invocation."""

    def __init__(self, config: Config, dataset: Dataset, run_dir: Path, *, resume: bool = False,
                 overwrite: bool = False, callbacks: Sequence[Callback] = (), progress: bool = True,
                 scheduler: BucketScheduler | None = None) -> None:
        self.config = config
        self.dataset = dataset
        self.run_dir = run_dir
        self.model = Model(config, dataset)
        if dataset.edge_count("train") == 0:
            raise TrainingError(f"{dataset.path} has no training edges.")
        if config.training.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("training.device is cuda, but no CUDA device is available.")
        partitions = self.model.num_partitions
        storage = config.storage
        self.slots = partitions if storage.buffer_partitions == 0 else min(storage.buffer_partitions, partitions)
        n_lhs = max((self.model.entity_types[r.lhs].partitions for r in self.model.relations), default=1)
        n_rhs = max((self.model.entity_types[r.rhs].partitions for r in self.model.relations), default=1)
        self.scheduler = scheduler or LocalScheduler(config, n_lhs, n_rhs, self.slots)
        tag = self.scheduler.run_files_tag
        if self.scheduler.prepares_run_dir:
            self.store, self.manifest = prepare_run_dir(config, dataset, run_dir, resume, overwrite)
        else:  # another trainer prepared the directory
            self.store = CheckpointStore(run_dir, tag=tag)
            self.manifest = self.store.manifest() if resume else None
        self.workers, self.threads = resolve_workers(config, self.scheduler.trainers_on_this_machine)
        self.fused = fused_training(config, self.model)  # no score matrices: freed memory goes back
        self.threaded = self.workers > 1 and self.fused
        self.memory_plan = plan_memory(config, self.model, self.slots, self.workers, self.threaded)
        check_memory(self.memory_plan, config, partitions)
        self.callbacks: list[Callback] = []
        if progress:
            self.callbacks.append(ProgressCallback(config.training.epochs))
        if config.training.eval_every > 0 and dataset.edge_count("valid") > 0 and self.scheduler.evaluates:
            self.callbacks.append(EvalCallback(run_dir, config))  # before the loggers: they report its result
        metrics = run_dir / (f"metrics.{tag}.jsonl" if tag else "metrics.jsonl")
        self.callbacks += [LogCallback(config.training.epochs), MetricsLogCallback(metrics), *callbacks]
        self.history: list[dict[str, Any]] = []  # one record per finished epoch, kept in every checkpoint
        self.best: dict[str, Any] | None = None  # the checkpoint of the best validation MRR, kept in every checkpoint
        if config.training.early_stopping_patience:
            if dataset.edge_count("valid") == 0:
                raise ConfigError(f"training.early_stopping_patience watches the validation MRR, but {dataset.path} "
                                  "has no valid split (import it with --valid).")
            if not isinstance(self.scheduler, LocalScheduler):
                raise ConfigError("training.early_stopping_patience stops a single trainer; it is not available "
                                  "with several trainers.")

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def run(self) -> Run:
        started = time.perf_counter()
        config = self.config
        t = config.training
        start_epoch = int(self.manifest["epoch"]) if self.manifest else 0
        start_bucket = int(self.manifest["buckets_done"]) if self.manifest else 0
        history = self.history = list(self.manifest.get("history", [])) if self.manifest else []
        self.best = self.manifest.get("best") if self.manifest else None
        epochs_done = start_epoch
        edges_total = 0
        buffer = PartitionBuffer(self.model, self.store, self.manifest, slots=self.slots, seed=t.seed,
                                 storage_dtype=config.storage.storage_dtype, prefetch=config.storage.prefetch)
        pool: WorkerPool | ThreadPool | None = None
        context: TrainingContext | None = None
        restore_torch: Callable[[], None] | None = None
        train_edges = self.dataset.edge_count("train")
        with PeakMemory() as memory, terminate_as_interrupt(), logging_redirect_tqdm([logging.getLogger("shardgraph")]):
            try:
                if self.threaded:
                    # the compiled step runs without the interpreter lock: worker threads, no processes
                    restore_torch = configure_torch(1, keep_memory=False)
                    pool = ThreadPool(self.workers, config, self.dataset, buffer.shared)
                    how = f"{self.workers} worker thread(s)"
                elif self.workers > 1:
                    return_freed_memory()
                    pool = WorkerPool(self.workers, self.threads, config, str(self.dataset.path), buffer.shared)
                    how = f"{self.workers} worker processes x {self.threads} thread(s)"
                else:
                    restore_torch = configure_torch(self.threads, keep_memory=not self.fused)
                    context = TrainingContext(config, self.dataset, buffer.shared, t.device)
                    how = f"1 worker x {self.threads} thread(s)"
                log.info(f"training {self.model} on {self.dataset.path}: {train_edges:,} edges, "
                         f"{self.model.num_partitions} partition(s), {self.slots} in memory, {how} -> {self.run_dir}")
                log.info(f"memory: {self.memory_plan.describe()}")
                self._emit("on_train_begin", self)
                self.scheduler.attach(buffer)
                last_epoch = t.epochs
                if history and start_bucket == 0 and int(history[-1]["epoch"]) == start_epoch \
                        and "eval" not in history[-1] and self.manifest is not None:
                    # the run was stopped (killed) after the checkpoint of its last epoch but before
                    # that epoch's validation: validate it now, as the undisturbed run did
                    missed = EpochStats(start_epoch - 1)
                    self._emit("on_resumed_epoch_end", missed)
                    if self._record_eval(history[-1], missed, int(self.manifest["version"])):
                        last_epoch = start_epoch  # early stopping: the undisturbed run stopped here
                for epoch in range(start_epoch, last_epoch):
                    first = start_bucket if epoch == start_epoch else 0
                    stats = self._epoch(epoch, first, buffer, pool, context)
                    edges_total += stats.edges
                    record: dict[str, Any] = {"epoch": epoch + 1, "edges": stats.edges,
                                              "seconds": round(stats.seconds, 3), "loss": stats.mean_loss,
                                              "partition_loads": stats.partition_loads}
                    history.append(record)
                    version = None
                    if self.scheduler.after_epoch(buffer):
                        version = buffer.checkpoint(epoch=epoch + 1, buckets_done=0, keep=t.keep_checkpoints,
                                                    extra=self._manifest_extra())
                    self.scheduler.after_checkpoint()
                    self._emit("on_epoch_end", stats)  # evaluates the checkpoint just written
                    epochs_done = epoch + 1
                    if self._record_eval(record, stats, version):
                        break
            finally:
                if pool is not None:
                    pool.close()
                buffer.close()
                if restore_torch is not None:
                    restore_torch()
        if self.best is not None:
            log.info(f"eval and export use the checkpoint of the best validation MRR: epoch {self.best['epoch']} "
                     f"(MRR {self.best['value']:.4f}); the last checkpoint (epoch {epochs_done}) is kept for --resume")
        run = Run(self.run_dir, config, epochs=epochs_done, edges=edges_total,
                  train_s=time.perf_counter() - started, peak_rss_mb=memory.peak_mb,
                  planned_mb=self.memory_plan.total_mb, history=history)
        self._emit("on_train_end", run)
        return run

    def _manifest_extra(self) -> dict[str, Any]:
        """What every checkpoint's manifest carries besides the tables: the history, the best checkpoint."""
        return {"history": self.history} | ({"best": self.best} if self.best is not None else {})

    def _record_eval(self, record: dict[str, Any], stats: EpochStats, version: int | None) -> bool:
        """Keep an epoch's validation (if it had one) in its history record and the checkpoint `version`
        written after it; True when early stopping's patience is exhausted."""
        if not stats.eval:
            return False
        record["eval"] = stats.eval
        if version is not None:
            self._mark_best(version, stats.epoch + 1, float(stats.eval["mrr"]))
            self.store.annotate(version, self._manifest_extra())
        return self._patience_exhausted()

    def _mark_best(self, version: int, epoch: int, mrr: float) -> None:
        """Checkpoint `version` (after `epoch`) has validation MRR `mrr`: is it the best so far?"""
        if self.best is None or mrr > float(self.best["value"]):
            self.best = {"version": version, "epoch": epoch, "metric": "mrr", "value": mrr}

    def _patience_exhausted(self) -> bool:
        """training.early_stopping_patience evaluations in a row since the best one, none better."""
        patience = self.config.training.early_stopping_patience
        if not patience or self.best is None:
            return False
        since = [r["epoch"] for r in self.history if "eval" in r and r["epoch"] > self.best["epoch"]]
        if len(since) < patience:
            return False
        log.info(f"early stopping after epoch {since[-1]}: the validation MRR has not improved for {len(since)} "
                 f"evaluations (best {self.best['value']:.4f}, epoch {self.best['epoch']})")
        return True

    def _epoch(self, epoch: int, first: int, buffer: PartitionBuffer, pool: WorkerPool | ThreadPool | None,
               context: TrainingContext | None) -> EpochStats:
        t = self.config.training
        stats = EpochStats(epoch)
        started = time.perf_counter()
        buckets = self.scheduler.start_epoch(epoch, first)
        self._emit("on_epoch_begin", epoch, buckets, self.dataset.edge_count("train"))
        loads_before = buffer.loads
        since_checkpoint = 0
        while (item := self.scheduler.acquire()) is not None:
            raise_if_interrupted()
            index, (lhs, rhs) = item
            keys = bucket_partitions(self.model, lhs, rhs)
            upcoming = [bucket_partitions(self.model, *b) for b in self.scheduler.upcoming()]
            buffer.ensure(keys, upcoming)
            if upcoming:
                buffer.prefetch(upcoming[0], upcoming[1:])
            info = self.dataset.bucket("train", lhs, rhs)
            bucket_started = time.perf_counter()
            results: list[TaskResult] = []
            if info is not None and info.edges > 0:
                results = self._train_bucket(epoch, lhs, rhs, info.edges, str(self.dataset.bucket_path(info)),
                                             buffer.slot_map(keys), pool, context)
                buffer.mark_dirty(keys)
            bucket = BucketStats(epoch, index, buckets, lhs, rhs, sum(r.edges for r in results),
                                 sum(r.loss for r in results), time.perf_counter() - bucket_started,
                                 buffer.loads - loads_before)
            if not math.isfinite(bucket.loss):
                raise TrainingError(
                    f"The loss became {bucket.loss} in epoch {epoch + 1}, bucket ({lhs}, {rhs}). The embeddings "
                    f"diverged: lower training.lr (now {t.lr}) or relation_lr, or set model.max_norm. "
                    "The last good checkpoint is kept; resume from it with --resume after changing the config "
                    "only in [training].")
            stats.edges += bucket.edges
            stats.loss += bucket.loss
            self.scheduler.release(index, (lhs, rhs), bucket)
            self._emit("on_bucket_end", bucket)
            since_checkpoint += 1
            done = self.scheduler.buckets_done()
            if (t.checkpoint_every_buckets and self.scheduler.partial_checkpoints
                    and since_checkpoint >= t.checkpoint_every_buckets and done < buckets):
                buffer.checkpoint(epoch=epoch, buckets_done=done, keep=t.keep_checkpoints,
                                  extra=self._manifest_extra())
                since_checkpoint = 0
        self.scheduler.end_epoch()
        stats.seconds = time.perf_counter() - started
        stats.partition_loads = buffer.loads - loads_before
        return stats

    def _train_bucket(self, epoch: int, lhs: int, rhs: int, edges: int, path: str, slots: dict[Any, int],
                      pool: WorkerPool | ThreadPool | None, context: TrainingContext | None) -> list[TaskResult]:
        seed = self.config.training.seed

        def progress(done: int) -> None:
            self._emit("on_progress", done)

        if pool is None:
            assert context is not None
            return [train_task(context, BucketTask(epoch, lhs, rhs, path, edges, slots, seed), progress)]
        shares = min(pool.workers, edges)
        tasks = [BucketTask(epoch, lhs, rhs, path, edges, slots, seed, rank=r, shares=shares) for r in range(shares)]
        return pool.run(tasks, progress)


def train(config: Config | str | Path, *, dataset: str | Path | None = None, run_dir: str | Path | None = None,
          resume: bool = False, overwrite: bool = False, callbacks: Sequence[Callback] = (),
          progress: bool = True, scheduler: BucketScheduler | None = None) -> Run:
    """Train embeddings on an imported dataset; returns the Run (its directory holds the checkpoint).

    `dataset` and `run_dir` default to config.data.dataset and runs/<dataset name>. With
    `resume`, a run directory holding a checkpoint continues from it.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    if dataset is not None:
        config = config.replace(data=_with_dataset(config, str(dataset)))
    if not config.data.dataset:
        raise ConfigError("No dataset: set data.dataset in the config or pass --dataset.")
    data = Dataset(config.data.dataset)
    path = Path(run_dir) if run_dir is not None else default_run_dir(config)
    with exclusive(path, "training run"):
        if config.walks.method != "none":
            config, data = _walk_corpus(config, data, path, resume, overwrite, progress)
        trainer = Trainer(config, data, path, resume=resume, overwrite=overwrite, callbacks=callbacks,
                          progress=progress, scheduler=scheduler)
        return trainer.run()


def _walk_corpus(config: Config, data: Dataset, path: Path, resume: bool, overwrite: bool,
                 progress: bool) -> tuple[Config, Dataset]:
    """[walks]: the run trains the skip-gram pairs of the graph's walks (built in RUN/walks, or reused;
    or `data` is already a walk corpus, from `shardgraph walks`)."""
    from shardgraph.walks.corpus import is_walk_corpus, training_config, walk_corpus

    if is_walk_corpus(data):
        return training_config(config, data), data
    if (path / "checkpoint" / "manifest.json").exists() and not resume:
        if not overwrite:
            raise CheckpointError(f"{path} already holds a trained run; pass --resume to continue it or "
                                  "--overwrite to start again.")
        shutil.rmtree(path)
    corpus = walk_corpus(config, data, path, progress=progress)
    return training_config(config, corpus), corpus


def _with_dataset(config: Config, dataset: str) -> Any:
    import dataclasses

    return dataclasses.replace(config.data, dataset=dataset)
