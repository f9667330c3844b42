"""Read access to a trained run directory: its config, dataset, model and last checkpoint."""

from __future__ import annotations

import json
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

RUN_FORMAT = "shardgraph-run"
RUN_FORMAT_VERSION = 1


class TrainedRun:
    """A run directory with a complete checkpoint. Embeddings are read partition by partition."""

    def __init__(self, path: str | Path, dataset: str | Path | None = None, verify: bool = True) -> None:
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
        self.manifest: dict[str, Any] = manifest
        dataset_path = Path(dataset) if dataset is not None else Path(self.info["dataset"])
        try:
            self.dataset = Dataset(dataset_path)
        except DatasetError as exc:
            raise CheckpointError(f"The dataset of run {self.path} cannot be opened: {exc}") from None
        self.model = Model(self.config, self.dataset)
        self.verify = verify

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

    def raw_embeddings(self, entity_type: str, partition: int) -> np.ndarray:
        """The stored (rows, D) table of a partition as a memory map (storage dtype; bfloat16 as uint16)."""
        files = self.store.partition_files(self.manifest, entity_type, partition)
        embeddings, _ = self.store.load_partition(files, verify=self.verify, mmap=True)
        return embeddings

    def storage_dtype(self, entity_type: str, partition: int) -> str:
        return self.store.partition_files(self.manifest, entity_type, partition).dtype

    def embeddings(self, entity_type: str, partition: int, rows: slice | np.ndarray | None = None,
                   effective: bool = True) -> Tensor:
        """float32 embeddings of a partition (or of some rows of it).

        With `effective`, as the model uses them: plus the type's global bias, max-norm applied.
        """
        raw = self.raw_embeddings(entity_type, partition)
        part = raw if rows is None else raw[rows]
        tensor = from_numpy(np.array(part), self.storage_dtype(entity_type, partition)).float()
        return self.effective(entity_type, tensor) if effective else tensor

    def effective(self, entity_type: str, vectors: Tensor) -> Tensor:
        bias = self.biases.get(entity_type)
        if bias is not None:
            vectors = vectors + bias
        if self.config.model.max_norm > 0:
            vectors = torch.renorm(vectors, 2, 0, self.config.model.max_norm)
        return vectors
