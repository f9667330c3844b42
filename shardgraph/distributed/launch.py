"""Training with several trainers, launched by torchrun:

    torchrun --nnodes N --nproc-per-node K --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
        -m shardgraph train CONFIG --out RUN

Each process is one trainer; all share the dataset and the run directory (local disk for
trainers on one machine, a shared filesystem across machines). Buckets are handed out by a
lock service over the c10d store (shardgraph.distributed.scheduler); partitions pass from
trainer to trainer through versioned files in the run directory; relation parameters are
synced through the store after every bucket, unpartitioned entity types averaged with an
all-reduce (gloo) at every epoch end; rank 0 writes the checkpoint of each epoch. When
torchrun restarts the group after a failure (--max-restarts), every trainer resumes from the
last complete checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from shardgraph.config import Config, load_config
from shardgraph.data.dataset import Dataset
from shardgraph.distributed.scheduler import DistributedScheduler, StoreMutex
from shardgraph.errors import ConfigError
from shardgraph.storage.buffer import PartitionBuffer
from shardgraph.training.callbacks import BucketStats
from shardgraph.training.trainer import Run, Trainer, default_run_dir
from shardgraph.training.worker import bucket_partitions
from shardgraph.utils.lock import exclusive
from shardgraph.utils.process import die_with_launcher

log = logging.getLogger(__name__)


def distributed_environment() -> dict[str, int] | None:
    """rank, world_size, local_world_size and restart count from torchrun's environment, or None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return {"rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"]),
            "local_world_size": int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])),
            "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))}


class SharedParameters:
    """Keeps what every trainer trains a copy of in step across trainers.

    Relation parameters, global biases and their Adagrad state are small: after every bucket a
    trainer adds what it changed since its last sync to a central copy in the c10d store and
    takes the central copy back (asynchronous, like a parameter server, without one to run).
    Unpartitioned entity types can be large: their copies are averaged with an all-reduce at
    each epoch end.
    """

    def __init__(self, buffer: PartitionBuffer, store: dist.Store, rank: int, world_size: int) -> None:
        self.buffer, self.store, self.rank, self.world_size = buffer, store, rank, world_size
        self.mutex = StoreMutex(store, "parameters-mutex", str(rank))
        shared = buffer.shared
        self.tensors = {f"{group}/{key}": tensor for group, tensors in
                        (("rel", shared.relations), ("relstate", shared.relation_state), ("bias", shared.bias),
                         ("biasstate", shared.bias_state)) for key, tensor in tensors.items() if tensor.numel()}
        self.base: dict[str, torch.Tensor] = {}

    def publish(self) -> None:
        """Rank 0 sets the central copy (all trainers hold the same values); everyone records its base.
        Call between two barriers."""
        if self.rank == 0:
            self.mutex.initialize()
            for key, tensor in self.tensors.items():
                self.store.set(key, tensor.numpy().tobytes())  # type: ignore[arg-type]
        self.base = {key: tensor.clone() for key, tensor in self.tensors.items()}

    def sync(self) -> None:
        """Add local changes to the central copy; take the central copy."""
        with self.mutex:
            for key, tensor in self.tensors.items():
                central = torch.frombuffer(bytearray(self.store.get(key)), dtype=torch.float32).view_as(tensor)
                central += tensor - self.base[key]
                self.store.set(key, central.numpy().tobytes())  # type: ignore[arg-type]
                tensor.copy_(central)
                self.base[key] = central

    def pull(self) -> None:
        """Take the central copy (at an epoch end, after every trainer's last sync)."""
        for key, tensor in self.tensors.items():
            tensor.copy_(torch.frombuffer(bytearray(self.store.get(key)), dtype=torch.float32).view_as(tensor))

    def average_unpartitioned(self) -> None:
        buffer = self.buffer
        unpartitioned = [(name, 0) for name, spec in buffer.model.entity_types.items() if spec.partitions == 1]
        buffer.ensure(unpartitioned)
        for key in unpartitioned:
            table, state, count = buffer.table(key)
            for tensor in (table[:count], state[:count]):
                work = tensor.float() if tensor.dtype != torch.float32 else tensor
                dist.all_reduce(work, op=dist.ReduceOp.SUM)
                work /= self.world_size
                if work is not tensor:
                    tensor.copy_(work)
        buffer.mark_dirty(unpartitioned)


class TrainerScheduler(DistributedScheduler):
    """The distributed scheduler plus this trainer's identity and the epoch-end protocol: average,
    checkpoint on rank 0, barrier. Rank 0 prepares the run directory and evaluates."""

    def __init__(self, *args: Any, trainers_on_this_machine: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trainers_on_this_machine = trainers_on_this_machine
        self.prepares_run_dir = self.evaluates = self.rank == 0
        self.run_files_tag = "" if self.rank == 0 else f"r{self.rank}"

    def attach(self, buffer: PartitionBuffer) -> None:
        super().attach(buffer)
        self.shared = SharedParameters(buffer, self.store, self.rank, self.world_size)

    partial_checkpoints = False

    def start_epoch(self, epoch: int, first: int) -> int:
        count = super().start_epoch(epoch, first)  # ends with a barrier: every trainer holds the same values
        self.shared.publish()
        self.barrier()
        return count

    def release(self, index: int, bucket: tuple[int, int], stats: BucketStats) -> None:
        super().release(index, bucket, stats)
        self.shared.sync()

    def after_epoch(self, buffer: PartitionBuffer) -> bool:
        self.shared.pull()  # end_epoch's barrier: every trainer has synced its last bucket
        self.shared.average_unpartitioned()
        if self.rank != 0:
            return False
        keys = [(name, p) for name, spec in buffer.model.entity_types.items() if spec.partitions > 1
                for p in range(spec.partitions)]
        for key, files in self.latest_files(keys).items():
            buffer.forget(key)
            buffer.files[key[0]][key[1]] = files
        return True

    def after_checkpoint(self) -> None:
        self.barrier()  # nobody writes new partition files while rank 0 commits and collects garbage


def train_distributed(config: Config | str | Path, *, dataset: str | Path | None = None,
                      run_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                      progress: bool = True, backend: str = "gloo") -> Run:
    """Train as one of the trainers torchrun started (reads RANK, WORLD_SIZE, ... from the environment)."""
    env = distributed_environment()
    if env is None:
        raise ConfigError("--distributed needs torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...): "
                          "launch with `torchrun --nproc-per-node K -m shardgraph train CONFIG ...`.")
    die_with_launcher()  # `python -m shardgraph` did this already, before its imports; not Python callers
    if not isinstance(config, Config):
        config = load_config(config)
    if dataset is not None:
        config = config.replace(data=dataclasses.replace(config.data, dataset=str(dataset)))
    if not config.data.dataset:
        raise ConfigError("No dataset: set data.dataset in the config or pass --dataset.")
    if config.walks.method != "none":
        from shardgraph.walks.corpus import is_walk_corpus, training_config

        corpus = Dataset(config.data.dataset)
        if not is_walk_corpus(corpus):
            raise ConfigError("Distributed trainers do not walk: build the walk corpus first with `shardgraph walks "
                              "CONFIG --out DIR`, then launch the trainers with -p data.dataset=DIR.")
        config = training_config(config, corpus)
    if config.training.workers == 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        per_trainer = max(1, cores // env["local_world_size"])
        config = config.replace(training=dataclasses.replace(config.training, workers=per_trainer))
    rank, world_size = env["rank"], env["world_size"]
    resume = resume or env["restart"] > 0
    # the store torchrun provides (env://), under a prefix of its own for each restart of the group:
    # keys a dead trainer left (its gloo address, bucket locks) must not be read by its successor
    base, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size,
                                      timeout=timedelta(minutes=10)))
    attempt = dist.PrefixStore(f"shardgraph/attempt{env['restart']}/", base)
    if not dist.is_initialized():
        dist.init_process_group(backend, store=dist.PrefixStore("pg/", attempt), rank=rank, world_size=world_size,
                                timeout=timedelta(minutes=60))
    lock = contextlib.ExitStack()
    try:
        store = dist.PrefixStore("scheduler/", attempt)
        data = Dataset(config.data.dataset)
        path = Path(run_dir) if run_dir is not None else default_run_dir(config)

        def barrier() -> None:
            dist.barrier()

        if rank == 0:
            trainer_args: dict[str, Any] = {"resume": resume, "overwrite": overwrite}
        else:
            trainer_args = {"resume": True, "overwrite": False}
        # rank 0 prepares the run directory (or refuses) before the others open it
        trainer = None
        error: BaseException | None = None
        if rank == 0:
            try:
                lock.enter_context(exclusive(path, "training run"))  # rank 0 writes for the group
                trainer = _make_trainer(config, data, path, store, env, barrier, progress, **trainer_args)
            except BaseException as exc:  # tell the others, then fail
                error = exc
        failed = torch.tensor([1 if error else 0])
        dist.all_reduce(failed)
        if failed.item():
            if error is not None:
                raise error
            raise ConfigError("rank 0 could not prepare the run directory; see its error.")
        if rank != 0:
            trainer = _make_trainer(config, data, path, store, env, barrier, progress, **trainer_args)
        assert trainer is not None
        if env["restart"] > 0:
            done = trainer.manifest or {}
            log.warning(f"trainer {rank} of {world_size}: restart {env['restart']} of the group, resuming from the "
                        f"last complete checkpoint (epoch {done.get('epoch', 0)}, "
                        f"{done.get('buckets_done', 0)} buckets into the next)")
        else:
            log.info(f"trainer {rank} of {world_size} ready")
        run = trainer.run()
        dist.barrier()
        return run
    finally:
        lock.close()
        if dist.is_initialized():
            dist.destroy_process_group()


def _make_trainer(config: Config, data: Dataset, path: Path, store: dist.Store, env: dict[str, int],
                  barrier: Any, progress: bool, **kwargs: Any) -> Trainer:
    from shardgraph.model.model import Model

    model = Model(config, data)
    n_lhs = max((model.entity_types[r.lhs].partitions for r in model.relations), default=1)
    n_rhs = max((model.entity_types[r.rhs].partitions for r in model.relations), default=1)

    def partitioned(bucket: tuple[int, int]) -> list[tuple[str, int]]:
        return [key for key in bucket_partitions(model, *bucket) if model.entity_types[key[0]].partitions > 1]

    scheduler = TrainerScheduler(config, store, env["rank"], env["world_size"], n_lhs, n_rhs, partitioned, barrier,
                                 trainers_on_this_machine=env["local_world_size"])
    return Trainer(config, data, path, scheduler=scheduler, progress=progress and env["rank"] == 0, **kwargs)
