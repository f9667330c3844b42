"""Read access to a trained run directory: its config, dataset, model and last checkpoint."""

from __future__ import annotations

import json
import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shardgraph.config import Config, load_config
from shardgraph.data.dataset import Dataset
from shardgraph.errors import CheckpointError, DatasetError
from shardgraph.model.model import Model
from shardgraph.storage.checkpoint import CheckpointStore, from_numpy

log = logging.getLogger("shardgraph.run")

RUN_FORMAT = "shardgraph-run"
RUN_FORMAT_VERSION = 1
ADDED = "added"  # RUN/added/<type>.{ids.txt,npy}: entities embedded after training (embed-new)


class TrainedRun:
    """A run directory with a complete checkpoint. Embeddings are read partition by partition."""

    def __init__(self, path: str | Path, dataset: str | Path | None = None, verify: bool = True,
                 checkpoint: str = "best") -> None:
        """`checkpoint`: "best" (the checkpoint of the best validation MRR where training evaluated, else the
        last) or "last"."""
        if checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint must be 'best' or 'last'. Got {checkpoint!r} instead.")
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"Run directory {self.path} does not exist.")
        info_path = self.path / "run.json"
        if not info_path.is_file():
            raise CheckpointError(f"{self.path} is not a shardgraph run directory (no run.json).")
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        if self.info.get("format") != RUN_FORMAT or self.info.get("format_version") != RUN_FORMAT_VERSION:
            raise CheckpointError(f"{self.path} is a run of format {self.info.get('format')} version "
                                  f"{self.info.get('format_version')}; this shardgraph reads {RUN_FORMAT} "
                                  f"version {RUN_FORMAT_VERSION}.")
        self.config: Config = load_config(self.path / "config.toml")
        self.store = CheckpointStore(self.path)
        manifest = self.store.manifest()
        if manifest is None:
            raise CheckpointError(f"{self.path} has no complete checkpoint yet.")
        best = self.store.best_manifest(manifest) if checkpoint == "best" else None
        if best is not None and int(best["version"]) != int(manifest["version"]):
            mark = manifest["best"]
            log.info(f"{self.path}: using the best checkpoint (epoch {mark['epoch']}, valid {mark['metric']} "
                     f"{mark['value']:.4f}), not the last (epoch {manifest['epoch']})")
            manifest = best
        self.manifest: dict[str, Any] = manifest
        dataset_path = Path(dataset) if dataset is not None else Path(self.info["dataset"])
        try:
            self.dataset = Dataset(dataset_path)
        except DatasetError as exc:
            raise CheckpointError(f"The dataset of run {self.path} cannot be opened: {exc}") from None
        self.model = Model(self.config, self.dataset)
        self.verify = verify
        # Partition files are immutable (versioned names), so each checksum is verified once. Maps
        # are not kept open: a kept map's resident pages count in the process's memory (PSS) long
        # after the rows were copied out, and a ranking pass over all partitions would hold them all.
        self._verified: set[tuple[str, int]] = set()

    @property
    def epoch(self) -> int:
        return int(self.manifest["epoch"])

    @cached_property
    def relation_tables(self) -> dict[str, Tensor]:
        saved = self.store.load_relations(self.manifest, verify=self.verify)
        return {key[len("rel/"):]: torch.from_numpy(value).float() for key, value in saved.items()
                if key.startswith("rel/")}

    @cached_property
    def biases(self) -> dict[str, Tensor]:
        if not self.config.model.global_bias:
            return {}
        saved = self.store.load_relations(self.manifest, verify=False)
        return {key[len("bias/"):]: torch.from_numpy(value).float() for key, value in saved.items()
                if key.startswith("bias/")}

    def raw_embeddings(self, entity_type: str, partition: int, mmap: bool = True) -> np.ndarray:
        """The stored (rows, D) table of a partition (storage dtype; bfloat16 as uint16): a memory map
        (to read a few rows; drop it when done), or with `mmap=False` read whole into memory."""
        key = (entity_type, partition)
        files = self.store.partition_files(self.manifest, entity_type, partition)
        table, _ = self.store.load_partition(files, verify=self.verify and key not in self._verified, mmap=mmap)
        self._verified.add(key)
        return table

    def storage_dtype(self, entity_type: str, partition: int) -> str:
        return self.store.partition_files(self.manifest, entity_type, partition).dtype

    def embeddings(self, entity_type: str, partition: int, rows: slice | np.ndarray | None = None,
                   effective: bool = True) -> Tensor:
        """float32 embeddings of a partition (or of some rows of it).

        With `effective`, as the model uses them: plus the type's global bias, max-norm applied.
        """
        if rows is None:
            part = self.raw_embeddings(entity_type, partition, mmap=False)
        else:
            part = np.array(self.raw_embeddings(entity_type, partition)[rows])  # the map is dropped here
        tensor = from_numpy(part, self.storage_dtype(entity_type, partition)).float()
        return self.effective(entity_type, tensor) if effective else tensor

    def gather(self, entity_type: str, ids: np.ndarray) -> Tensor:
        """Effective float32 embeddings (n, D) of global ids of one type, read partition by partition."""
        spec = self.model.entity_types[entity_type]
        out = torch.empty(len(ids), spec.dim)
        offsets = np.concatenate([[0], np.cumsum(spec.partition_counts)])
        partition = np.searchsorted(offsets, ids, side="right") - 1
        for p in np.unique(partition):
            rows = np.flatnonzero(partition == p)
            local = ids[rows] - offsets[p]
            order = np.argsort(local)
            out[torch.from_numpy(rows[order])] = self.embeddings(entity_type, int(p), rows=local[order])
        return out

    def effective(self, entity_type: str, vectors: Tensor) -> Tensor:
        bias = self.biases.get(entity_type)
        if bias is not None:
            vectors = vectors + bias
        if self.config.model.max_norm > 0:
            vectors = torch.renorm(vectors, 2, 0, self.config.model.max_norm)
        return vectors


def create_run(run_dir: str | Path, config: Config, dataset: Dataset, embeddings: dict[str, list[Tensor]],
               relation_params: dict[str, Tensor] | None = None, *, epoch: int = 0) -> TrainedRun:
    """Write a run directory holding the given embeddings (type -> one (rows, D) tensor per
    partition) and relation parameters, as a complete checkpoint. For runs made outside the
    trainer: tests with hand-chosen embeddings, embeddings of new nodes."""
    import dataclasses

    from shardgraph.config import dump_config
    from shardgraph.storage.checkpoint import PartitionFiles
    from shardgraph.utils.atomic import atomic_write_text

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config.replace(data=dataclasses.replace(config.data, dataset=str(dataset.path)))
    model = Model(config, dataset)
    atomic_write_text(run_dir / "config.toml", dump_config(config, commented=False))
    atomic_write_text(run_dir / "run.json", json.dumps({
        "format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "dataset": str(dataset.path.resolve())}))
    store = CheckpointStore(run_dir)
    files: dict[str, dict[int, PartitionFiles]] = {}
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(config.storage.storage_dtype, torch.float32)
    for entity_type, spec in model.entity_types.items():
        files[entity_type] = {}
        for partition in range(spec.partitions):
            table = embeddings[entity_type][partition]
            if tuple(table.shape) != (spec.partition_counts[partition], spec.dim):
                raise CheckpointError(f"embeddings of {entity_type} partition {partition} have shape "
                                      f"{tuple(table.shape)}, expected {(spec.partition_counts[partition], spec.dim)}")
            files[entity_type][partition] = store.write_partition(entity_type, partition, table.to(dtype),
                                                                  torch.zeros(table.shape[0]))
    params = model.init_relation_params()
    params.update(relation_params or {})
    tensors = {f"rel/{k}": v for k, v in params.items()} | {f"relstate/{k}": torch.zeros_like(v)
                                                          for k, v in params.items()}
    relations = store.write_relations(tensors)
    store.commit(epoch=epoch, buckets_done=0, partitions=files, relations=relations)
    return TrainedRun(run_dir)
