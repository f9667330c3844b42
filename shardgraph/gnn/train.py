"""Training of GraphSAGE node classification (`shardgraph train-sage`).

    RUN/config.json          the resolved config
    RUN/splits.npz           train / valid / test node ids
    RUN/checkpoint.pt        latest state (model, Adam, best weights, early-stopping counters,
                             history), rewritten by atomic rename every `checkpoint_seconds`
    RUN/history.jsonl        one line per validated epoch: loss, train and valid accuracy
    RUN/model.pt             the best-validation weights and what prediction needs (written last)
    RUN/metrics.json         valid and test metrics of the best weights

A run killed at any point resumes from its last checkpoint with `--resume`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from shardgraph.config import Config, SageConfig
from shardgraph.data.csr import load_csr
from shardgraph.data.dataset import Dataset
from shardgraph.errors import CheckpointError, ConfigError, InputError, TrainingError
from shardgraph.gnn.features import FeatureStore, NodeInput
from shardgraph.gnn.graph import neighbourhoods
from shardgraph.gnn.metrics import classification_metrics, multilabel_metrics
from shardgraph.gnn.model import Adjacency, GraphSage, adjacency
from shardgraph.gnn.sampler import NeighborSampler
from shardgraph.utils.atomic import atomic_write_bytes, atomic_write_text
from shardgraph.utils.memory import peak_rss_mb

log = logging.getLogger(__name__)

MODEL_VERSION = 1


@dataclass
class SageRun:
    """What `train_sage` returns."""

    path: Path
    metrics: dict[str, Any]
    epochs: int
    best_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


class GraphData:
    """A dataset ready for GraphSAGE: neighbourhoods, features, labels, by node id."""

    def __init__(self, dataset: Dataset, sage: SageConfig, removed: np.ndarray | None = None) -> None:
        self.dataset = dataset
        self.graph = load_csr(dataset, "train", directed=sage.directed)
        self.indptr, self.indices = neighbourhoods(self.graph, sage.self_loops, removed)
        self.features = FeatureStore(dataset, self.graph.type_offsets, self.graph.type_names, sage.normalize)
        self.num_nodes = self.graph.num_nodes


def config_mapping(config: Config) -> dict[str, Any]:
    """The config as a mapping that `config_from_dict` reads back (empty tables left out)."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if v != {}}
        return value

    result: dict[str, Any] = strip(config.to_dict())
    return result


def node_ids_of(dataset: Dataset, entity_type: str, type_offset: int, names: list[str], path: str) -> np.ndarray:
    """Node ids of string ids (InputError naming the line of an unknown one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    known = pa.array(dataset.all_entity_names(entity_type), pa.string())
    found = pc.index_in(pa.array(names, pa.string()), value_set=known).to_numpy(zero_copy_only=False)
    missing = np.flatnonzero(np.isnan(found.astype(np.float64)))
    if len(missing):
        raise InputError(f"unknown node id {names[int(missing[0])]!r}", path=path, line=int(missing[0]) + 1)
    return found.astype(np.int64) + type_offset


def make_splits(data: GraphData, sage: SageConfig) -> dict[str, np.ndarray]:
    """Split files (ids, one per line) or a stratified seeded split of the labelled nodes."""
    features = data.features
    labelled = np.flatnonzero(features.primary_labels(np.arange(features.first, features.first + features.count))
                              >= 0) + features.first
    files = {"train": sage.split_train, "valid": sage.split_valid, "test": sage.split_test}
    if any(files.values()):
        splits = {}
        for name, path in files.items():
            if not path:
                splits[name] = np.zeros(0, np.int64)
                continue
            try:
                lines = [line.strip() for line in Path(path).read_text().splitlines()]
            except OSError as exc:
                raise InputError(f"cannot be read: {exc.strerror}", path=path) from None
            ids = node_ids_of(data.dataset, features.tables.entity_type, features.first,
                              [x for x in lines if x], path)
            unlabelled = ids[features.primary_labels(ids) < 0]
            if len(unlabelled):
                raise InputError(f"{len(unlabelled)} node(s) of the {name} split have no label", path=path)
            splits[name] = ids
    else:
        if len(sage.split_fractions) != 3 or abs(sum(sage.split_fractions) - 1) > 1e-6:
            raise ConfigError(f"sage.split_fractions must be three fractions summing to 1. Got "
                              f"{list(sage.split_fractions)} instead.")
        labels = features.primary_labels(labelled)
        rng = np.random.default_rng(sage.seed)
        parts: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
        for label in np.unique(labels):
            members = rng.permutation(labelled[labels == label])
            n_train = max(1, round(sage.split_fractions[0] * len(members)))
            n_valid = round(sage.split_fractions[1] * len(members))
            parts["train"].append(members[:n_train])
            parts["valid"].append(members[n_train : n_train + n_valid])
            parts["test"].append(members[n_train + n_valid :])
        splits = {k: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64) for k, v in parts.items()}
    if not len(splits["train"]):
        raise InputError("the training split is empty: label some nodes (nodes.labels / nodes.label_column) "
                         "or give sage.split_train")
    return splits


def _loss_weights(labels: np.ndarray, classes: int, enabled: bool) -> torch.Tensor | None:
    if not enabled:
        return None
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _positive_weights(targets: torch.Tensor, enabled: bool) -> torch.Tensor | None:
    """Multi-label class weights: each label's positives weighted by its negatives / positives (at least 1)."""
    if not enabled:
        return None
    positives = targets.sum(0)
    return torch.where(positives > 0, (len(targets) - positives) / positives.clamp(min=1), 1.0).clamp(min=1.0)


class Targets:
    """The labels of one split: (n,) class ids (single-label), or (n, C) 0/1 rows (multi-label)."""

    def __init__(self, features: FeatureStore, nodes: np.ndarray, classes: int, multi: bool) -> None:
        self.multi = multi
        self.primary = torch.from_numpy(features.primary_labels(nodes))
        self.rows = torch.zeros(0, classes)
        if multi:
            indptr, labels = features.label_lists(nodes)
            self.rows = torch.zeros(len(nodes), classes)
            self.rows[torch.from_numpy(np.repeat(np.arange(len(nodes)), np.diff(indptr))), torch.from_numpy(labels)] = 1

    def take(self, chosen: np.ndarray | None) -> torch.Tensor:
        values = self.rows if self.multi else self.primary
        return values if chosen is None else values[torch.from_numpy(np.asarray(chosen))]

    @staticmethod
    def hits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(n,) whether each node's first prediction is (one of) its label(s)."""
        first = logits.argmax(1)
        return target.gather(1, first[:, None])[:, 0] > 0 if target.dim() == 2 else first == target


class SageTrainer:
    """One GraphSAGE training run (full-batch or sampled mini-batches), with early stopping."""

    def __init__(self, config: Config, data: GraphData, splits: dict[str, np.ndarray], run_dir: Path) -> None:
        self.config, self.sage, self.data, self.splits, self.run_dir = config, config.sage, data, splits, run_dir
        features = data.features
        features.fit_numeric(splits["train"])
        self.classes = len(features.classes)
        self.multi = self.sage.multi_label
        self.targets = {k: Targets(features, v, self.classes, self.multi) for k, v in splits.items()}
        self.labels = {k: t.primary for k, t in self.targets.items()}
        if not self.multi:
            indptr, _ = features.label_lists(splits["train"])
            several = int((np.diff(indptr) > 1).sum())
            if several:
                log.warning("%d training nodes have several labels; only the first of each is learnt. Set "
                            "sage.multi_label = true to learn them all.", several)
        torch.manual_seed(self.sage.seed)
        self.model = GraphSage(features.sparse_width, features.dense_width, self.sage.hidden, self.classes,
                               self.sage.layers, self.sage.aggregator, self.sage.dropout)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.sage.lr,
                                          weight_decay=self.sage.weight_decay)
        self.loss_weights = (_positive_weights(self.targets["train"].rows, self.sage.class_weights) if self.multi
                             else _loss_weights(self.labels["train"].numpy(), self.classes, self.sage.class_weights))
        self.full = self.sage.mode == "full" or (self.sage.mode == "auto"
                                                 and data.num_nodes <= self.sage.full_batch_nodes)
        if not self.full and len(self.sage.fanouts) != self.sage.layers:
            raise ConfigError(f"sage.fanouts must give one fan-out per layer ({self.sage.layers}). Got "
                              f"{list(self.sage.fanouts)} instead.")
        self.sampler = NeighborSampler(data.indptr, data.indices, self.sage.fanouts if not self.full
                                       else [-1] * self.sage.layers, seed=self.sage.seed)
        self.epoch = 0
        self.best = (-1.0, float("inf"))
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] = {}
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0
        self._cache: dict[str, tuple[NodeInput, list[Adjacency]]] = {}

    # ------------------------------------------------------------------ steps
    def _computation(self, targets: np.ndarray, key: str | None = None) -> tuple[NodeInput, list[Adjacency]]:
        """Input features and adjacencies of the targets' sampled neighbourhoods. In full-batch mode
        (every neighbour) the receptive field of a split is built once and kept (`key`)."""
        if key is not None and key in self._cache:
            return self._cache[key]
        nodes, blocks = self.sampler.sample(targets)
        computation = (self.data.features.gather(nodes),
                       [adjacency(b, self.sage.aggregator) for b in reversed(blocks)])
        if key is not None and self.full:
            self._cache[key] = computation
        return computation

    def loss(self, logits: torch.Tensor, target: torch.Tensor, weighted: bool = True) -> torch.Tensor:
        """Cross-entropy over the labels, or binary cross-entropy per label (multi-label)."""
        weights = self.loss_weights if weighted else None
        if self.multi:
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weights)
        return F.cross_entropy(logits, target, weight=weights)

    def _train_epoch(self) -> tuple[float, float]:
        """One epoch; returns (training loss, training accuracy: the first prediction is a true label)."""
        self.model.train()
        train, targets = self.splits["train"], self.targets["train"]
        if self.full:
            self.optimizer.zero_grad()
            logits = self.model(*self._computation(train, "train"))
            target = targets.take(None)
            loss = self.loss(logits, target)
            loss.backward()
            self.optimizer.step()
            return float(loss.detach()), float(Targets.hits(logits, target).float().mean())
        order = np.random.default_rng([self.sage.seed, self.epoch]).permutation(len(train))
        total_loss = correct = 0.0
        batches = range(0, len(order), self.sage.batch_size)
        for start in tqdm(batches, desc=f"epoch {self.epoch + 1}", leave=False, disable=None, mininterval=1):
            chosen = order[start : start + self.sage.batch_size]
            self.optimizer.zero_grad()
            logits = self.model(*self._computation(train[chosen]))
            target = targets.take(chosen)
            loss = self.loss(logits, target)
            loss.backward()
            self.optimizer.step()
            total_loss += float(loss.detach()) * len(chosen)
            correct += float(Targets.hits(logits, target).sum())
        return total_loss / len(train), correct / len(train)

    @torch.no_grad()
    def logits(self, nodes: np.ndarray, key: str | None = None) -> torch.Tensor:
        """(n, C) logits of the nodes with the current weights (eval mode)."""
        self.model.eval()
        if self.full and key is not None:
            return self.model(*self._computation(nodes, key))
        step = 4 * self.sage.batch_size
        parts = [self.model(*self._computation(nodes[s : s + step])) for s in range(0, len(nodes), step)]
        return torch.cat(parts) if parts else torch.zeros(0, self.classes)

    # ------------------------------------------------------------------ loop
    def fit(self) -> None:
        sage = self.sage
        last_checkpoint = time.monotonic()
        started = time.perf_counter() - self.seconds
        valid, valid_target = self.splits["valid"], self.targets["valid"].take(None)
        if not len(valid):
            log.warning("the validation split is empty: training runs all %d epochs and keeps the last weights",
                        sage.epochs)
        with open(self.run_dir / "history.jsonl", "a") as history_file:
            while self.epoch < sage.epochs:
                loss, train_accuracy = self._train_epoch()
                self.epoch += 1
                if not np.isfinite(loss):
                    raise TrainingError(f"the loss became {loss} at epoch {self.epoch}; lower sage.lr")
                if self.epoch % sage.eval_every and self.epoch != sage.epochs:
                    continue
                if len(valid):
                    logits = self.logits(valid, "valid")
                    valid_loss = float(self.loss(logits, valid_target, weighted=False))
                    valid_accuracy = float(Targets.hits(logits, valid_target).float().mean())
                else:
                    valid_loss, valid_accuracy = loss, train_accuracy
                record = {"epoch": self.epoch, "loss": loss, "train_accuracy": train_accuracy,
                          "valid_loss": valid_loss, "valid_accuracy": valid_accuracy}
                self.history.append(record)
                history_file.write(json.dumps(record) + "\n")
                if valid_accuracy > self.best[0] or (valid_accuracy == self.best[0] and valid_loss < self.best[1]) \
                        or not len(valid):
                    self.best, self.best_epoch, self.bad_epochs = (valid_accuracy, valid_loss), self.epoch, 0
                    self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                else:
                    self.bad_epochs += sage.eval_every
                stop = self.bad_epochs >= sage.patience
                self.seconds = time.perf_counter() - started
                if time.monotonic() - last_checkpoint >= sage.checkpoint_seconds or stop:
                    history_file.flush()
                    self.save_checkpoint()
                    last_checkpoint = time.monotonic()
                if stop:
                    break
        self.seconds = time.perf_counter() - started
        self.save_checkpoint()
        self.model.load_state_dict(self.best_state)

    # ------------------------------------------------------------------ state
    def save_checkpoint(self) -> None:
        state = {
            "version": MODEL_VERSION, "epoch": self.epoch, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "best": self.best, "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs, "best_state": self.best_state, "history_length": len(self.history),
            "seconds": self.seconds, "torch_rng": torch.get_rng_state(),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.run_dir / "checkpoint.pt", buffer.getvalue())

    def load_checkpoint(self) -> None:
        path = self.run_dir / "checkpoint.pt"
        if not path.is_file():
            return
        try:
            state = torch.load(path, weights_only=True)  # never unpickle code from a run directory
        except Exception as exc:
            raise CheckpointError(f"{path} cannot be read ({exc}); start the run again without --resume") from None
        version = state.get("version") if isinstance(state, dict) else None
        if version != MODEL_VERSION:
            raise CheckpointError(f"{path} has checkpoint version {version}; this shardgraph "
                                  f"writes {MODEL_VERSION}.")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.best, self.best_epoch = state["epoch"], tuple(state["best"]), state["best_epoch"]
        self.bad_epochs, self.best_state, self.seconds = state["bad_epochs"], state["best_state"], state["seconds"]
        torch.set_rng_state(state["torch_rng"])
        lines = (self.run_dir / "history.jsonl").read_text().splitlines()[: state["history_length"]]
        self.history = [json.loads(line) for line in lines]
        atomic_write_text(self.run_dir / "history.jsonl", "".join(line + "\n" for line in lines))
        log.info("resumed %s at epoch %d", self.run_dir, self.epoch)

    def model_payload(self) -> dict[str, Any]:
        f = self.data.features
        return {
            "version": MODEL_VERSION, "state": self.model.state_dict(), "classes": f.classes,
            "sparse_width": f.sparse_width, "dense_width": f.dense_width,
            "numeric_mean": f.mean.tolist(), "numeric_std": f.std.tolist(),
            "full_batch": self.full, "multi_label": self.multi, "config": config_mapping(self.config),
        }


def train_sage(config: Config, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
               holdout_test: bool = False) -> SageRun:
    """Train GraphSAGE on `config.data.dataset` (with node tables); write the run directory.

    `holdout_test`: the test nodes and every arc touching them are removed while training
    (inductive evaluation); they are predicted afterwards on the whole graph.
    """
    sage = config.sage
    if not config.data.dataset:
        raise ConfigError("data.dataset must name the dataset directory (written by `shardgraph import --nodes`).")
    run = Path(run_dir)
    if run.exists() and not resume:
        if not overwrite:
            raise CheckpointError(f"{run} already exists; pass --resume to continue it or --overwrite to replace it.")
        import shutil

        shutil.rmtree(run)
    torch.set_num_threads(sage.threads or os.cpu_count() or 1)
    dataset = Dataset(config.data.dataset)
    data = GraphData(dataset, sage)
    if resume and (run / "splits.npz").is_file():
        with np.load(run / "splits.npz", allow_pickle=False) as saved:
            splits = {k: saved[k] for k in ("train", "valid", "test")}
    else:
        splits = make_splits(data, sage)
    if holdout_test and len(splits["test"]):
        removed = np.zeros(data.num_nodes, dtype=bool)
        removed[splits["test"]] = True
        train_data = GraphData(dataset, sage, removed)
    else:
        train_data = data
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "splits.npz").is_file():
        buffer = io.BytesIO()
        np.savez(buffer, **splits)
        atomic_write_bytes(run / "splits.npz", buffer.getvalue())
        atomic_write_text(run / "config.json", json.dumps(config_mapping(config), indent=1) + "\n")
    trainer = SageTrainer(config, train_data, splits, run)
    if resume:
        trainer.load_checkpoint()
    log.info("training GraphSAGE (%s) on %d nodes, %d arcs, %d classes; splits %s", "full-batch" if trainer.full
             else f"mini-batch, fan-outs {list(sage.fanouts)}", data.num_nodes, len(data.indices), trainer.classes,
             {k: len(v) for k, v in splits.items()})
    trainer.fit()
    if train_data is not data:  # inductive: evaluate on the whole graph
        trainer.data = data
        data.features.mean, data.features.std = train_data.features.mean, train_data.features.std
        trainer.sampler = NeighborSampler(data.indptr, data.indices, trainer.sampler.fanouts, seed=sage.seed)
        trainer._cache.clear()
    metrics: dict[str, Any] = {}
    for split in ("valid", "test"):
        if len(splits[split]):
            logits = trainer.logits(splits[split])
            if trainer.multi:
                indptr, labels = data.features.label_lists(splits[split])
                metrics[split] = multilabel_metrics(torch.sigmoid(logits).numpy(), indptr, labels,
                                                    data.features.classes)
            else:
                metrics[split] = classification_metrics(torch.softmax(logits, 1).numpy(),
                                                        trainer.labels[split].numpy(), data.features.classes)
    metrics.update({"epochs": trainer.epoch, "best_epoch": trainer.best_epoch,
                    "seconds": round(trainer.seconds, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
                    "splits": {k: len(v) for k, v in splits.items()}, "holdout_test": holdout_test})
    buffer = io.BytesIO()
    torch.save(trainer.model_payload(), buffer)
    atomic_write_bytes(run / "model.pt", buffer.getvalue())
    atomic_write_text(run / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return SageRun(run, metrics, trainer.epoch, trainer.best_epoch, trainer.seconds, trainer.history)
