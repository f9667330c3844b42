"""Top-k labels of a trained GraphSAGE run, for known nodes and, inductively, for new ones.

New nodes come as a node table with the training feature columns, and edge files linking them
to known nodes (or to each other). They get node ids after the graph's, their arcs are merged
into the neighbourhoods, and the trained weights predict them: no retraining.
"""

from __future__ import annotations

import io
import logging
import pickle  # only for its exception type: nothing is unpickled
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from shardgraph.config import Config, config_from_dict
from shardgraph.data.dataset import Dataset
from shardgraph.data.nodes import (
    dense_widths,
    embedding_source,
    encode_block,
    feature_layout,
    read_table_blocks,
    table_format,
)
from shardgraph.errors import CheckpointError, InputError, QueryError
from shardgraph.gnn.inference import iter_layerwise_logits
from shardgraph.gnn.model import GraphSage, adjacency
from shardgraph.gnn.sampler import NeighborSampler
from shardgraph.gnn.train import MODEL_VERSION, GraphData
from shardgraph.utils.atomic import atomic_write_bytes

log = logging.getLogger(__name__)


@dataclass
class LabelPredictions:
    """Top-k labels of n nodes, best first, held as arrays (a million nodes cost tens of MB, not
    a Python object per id and label): `node_ids` (n,) strings, `top` (n, k) indices into
    `classes`, `probabilities` (n, k), `new` (n,) whether each node was added at prediction time.
    `ids` and `labels` give them as Python lists."""

    node_ids: pa.Array
    classes: list[str]
    top: np.ndarray
    probabilities: np.ndarray
    new: np.ndarray

    def __len__(self) -> int:
        return len(self.node_ids)

    @property
    def ids(self) -> list[str]:
        return self.node_ids.to_pylist()

    @property
    def labels(self) -> list[list[str]]:
        return np.asarray(self.classes, dtype=object)[self.top].tolist()

    def to_table(self) -> pa.Table:
        classes = pa.array(self.classes, pa.string())
        columns: dict[str, Any] = {"id": self.node_ids}
        for j in range(self.top.shape[1]):
            columns[f"label_{j + 1}"] = classes.take(pa.array(self.top[:, j]))
            columns[f"probability_{j + 1}"] = pa.array(self.probabilities[:, j], pa.float32())
        columns["new"] = pa.array(self.new, pa.bool_())
        return pa.table(columns)

    def write(self, path: str | Path) -> None:
        """Parquet (.parquet) or CSV (anything else), by atomic rename."""
        buffer = io.BytesIO()
        if str(path).endswith(".parquet"):
            pq.write_table(self.to_table(), buffer)
        else:
            pacsv.write_csv(self.to_table(), buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def records(self, limit: int | None = None) -> list[dict[str, Any]]:
        n = len(self) if limit is None else min(limit, len(self))
        ids = self.node_ids.slice(0, n).to_pylist()
        return [{"id": ids[i], "labels": [{"label": self.classes[c], "probability": round(float(p), 6)}
                                          for c, p in zip(self.top[i], self.probabilities[i], strict=True)]}
                for i in range(n)]


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n, k) int64, their probabilities (n, k)) of each row, most likely first (ties: lower label).

    Both own their memory: a slice of the full (n, C) argsort would keep all of it alive (for 900k
    nodes and 100 labels that was 700 MB more at the peak of predict-labels)."""
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k].copy()
    return top, np.take_along_axis(probabilities, top, 1)


class SageModel:
    """A trained GraphSAGE run, ready to predict labels. Use `load_sage(RUN)`."""

    def __init__(self, run_dir: str | Path, dataset: str | Path | None = None) -> None:
        self.path = Path(run_dir)
        model_file = self.path / "model.pt"
        if not model_file.is_file():
            raise CheckpointError(f"{self.path} has no model.pt: it is not a finished GraphSAGE run "
                                  "(resume it with `shardgraph train-sage CONFIG --out RUN --resume`).")
        try:  # weights_only: a run directory from elsewhere must not run code through pickle
            payload = torch.load(model_file, weights_only=True)
        except pickle.UnpicklingError:
            raise CheckpointError(f"{model_file} holds Python objects besides tensors and plain values; shardgraph "
                                  "loads weights only and runs no code from a run directory. It was not written by "
                                  "shardgraph train-sage: train the run again.") from None
        except Exception as exc:
            raise CheckpointError(f"{model_file} cannot be read ({type(exc).__name__}: {exc}).") from None
        if not isinstance(payload, dict) or payload.get("version") != MODEL_VERSION:
            version = payload.get("version") if isinstance(payload, dict) else None
            raise CheckpointError(f"{model_file} has version {version}; expected {MODEL_VERSION}.")
        self.config: Config = config_from_dict(payload["config"])
        self.sage = self.config.sage
        self.dataset = Dataset(dataset or self.config.data.dataset)
        self.data = GraphData(self.dataset, self.sage)
        features = self.data.features
        if (features.sparse_width, features.dense_width) != (payload["sparse_width"], payload["dense_width"]):
            raise CheckpointError(f"the dataset {self.dataset.path} has other feature columns than the run was "
                                  "trained on.")
        features.mean = np.asarray(payload["numeric_mean"])
        features.std = np.asarray(payload["numeric_std"])
        self.classes: list[str] = payload["classes"]
        self.model = GraphSage(payload["sparse_width"], payload["dense_width"], self.sage.hidden, len(self.classes),
                               self.sage.layers, self.sage.aggregator, self.sage.dropout)
        self.model.load_state_dict(payload["state"])
        self.model.eval()
        self.full = bool(payload["full_batch"])
        self._names: pa.Array | None = None
        self._set_graph(self.data.indptr, self.data.indices)

    def _set_graph(self, indptr: np.ndarray, indices: np.ndarray) -> None:
        fanouts = [-1] * self.sage.layers if self.full else list(self.sage.fanouts)
        self.sampler = NeighborSampler(indptr, indices, fanouts, seed=self.sage.seed)

    # ------------------------------------------------------------------ ids
    @property
    def names(self) -> pa.Array:
        """String ids of the node-table type, in node id order (from the type's first node id)."""
        if self._names is None:
            self._names = pa.array(self.dataset.all_entity_names(self.data.features.tables.entity_type), pa.string())
        return self._names

    def node_ids(self, ids: Sequence[str]) -> np.ndarray:
        found = pc.index_in(pa.array(list(ids), pa.string()), value_set=self.names)
        if found.null_count:
            bad = ids[int(np.flatnonzero(found.is_null().to_numpy(zero_copy_only=False))[0])]
            raise QueryError(f"unknown node id {bad!r}")
        return found.to_numpy(zero_copy_only=False).astype(np.int64) + self.data.features.first

    # ------------------------------------------------------------------ prediction
    def probabilities(self, nodes: np.ndarray, method: str = "auto", batch_size: int = 4096) -> np.ndarray:
        """(n, C) label probabilities of node ids: softmax over the labels, or one sigmoid per label for
        multi-label runs (sage.multi_label).

        `layerwise`: every neighbour, one layer at a time over the whole graph (exact; mean and gcn);
        `sampled`: mini-batches over the sampled neighbourhoods of the run's fan-outs (all neighbours
        for full-batch runs). `auto` picks layerwise when it applies and many nodes are asked.
        """
        parts = list(self.iter_probabilities(nodes, method, batch_size))
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), np.float32)

    @torch.no_grad()
    def iter_probabilities(self, nodes: np.ndarray, method: str = "auto", batch_size: int = 4096
                           ) -> Iterator[np.ndarray]:
        """`probabilities`, one chunk of nodes at a time."""
        if method == "auto":
            method = "layerwise" if self.sage.aggregator != "max" and len(nodes) > 4 * batch_size else "sampled"
        if method == "layerwise":
            for logits in iter_layerwise_logits(self.model, self.data.features, self.sampler.indptr,
                                                self.sampler.indices, np.asarray(nodes, dtype=np.int64)):
                yield self._probabilities(logits)
            return
        for start in range(0, len(nodes), batch_size):
            sampled, blocks = self.sampler.sample(nodes[start : start + batch_size])
            logits = self.model(self.data.features.gather(sampled),
                                [adjacency(b, self.sage.aggregator) for b in reversed(blocks)])
            yield self._probabilities(logits)

    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        return np.asarray((torch.sigmoid(logits) if self.sage.multi_label else torch.softmax(logits, 1)).numpy())

    def predict_labels(self, ids: Sequence[str] | None = None, k: int = 2,
                       new_nodes: Sequence[str | Path] = (), new_edges: Sequence[str | Path] = (),
                       only_new: bool = True) -> LabelPredictions:
        """Top-k labels with probabilities.

        Without new nodes: of `ids`, or of every unlabelled node. With `new_nodes` (node tables)
        and `new_edges` (edge files; ends are known or new ids): of the new nodes (and, unless
        `only_new`, of every unlabelled node too), predicted inductively.
        """
        if k <= 0:
            raise QueryError(f"k must be a positive int. Got {k} instead.")
        k = min(k, len(self.classes))
        features = self.data.features
        new_ids = np.zeros(0, dtype=np.int64)
        new_names: list[str] = []
        if new_nodes:
            new_names = self._add_new_nodes([Path(p) for p in new_nodes], [Path(p) for p in new_edges])
            new_ids = np.arange(features.extra_first, features.extra_first + len(new_names), dtype=np.int64)
        if ids is not None:
            nodes, names = self.node_ids(ids), pa.array([str(i) for i in ids], pa.string())
        elif new_nodes and only_new:
            nodes, names = np.zeros(0, np.int64), pa.array([], pa.string())
        else:
            every = np.arange(features.first, features.first + features.count, dtype=np.int64)
            unlabelled = every[features.primary_labels(every) < 0]
            nodes = unlabelled
            names = self.names.take(pa.array(unlabelled - features.first))
        nodes = np.concatenate([nodes, new_ids])
        names = pa.concat_arrays([names, pa.array(new_names, pa.string())])
        top_labels, top_probabilities = [], []
        for probabilities in self.iter_probabilities(nodes):  # chunks: (n, C) is never held whole
            top, top_p = top_k(probabilities, k)
            top_labels.append(top)
            top_probabilities.append(top_p)
        return LabelPredictions(
            node_ids=names, classes=list(self.classes),
            top=np.concatenate(top_labels) if top_labels else np.zeros((0, k), np.int64),
            probabilities=np.concatenate(top_probabilities) if top_probabilities else np.zeros((0, k), np.float32),
            new=np.arange(len(nodes)) >= len(nodes) - len(new_ids))

    # ------------------------------------------------------------------ new nodes
    def _add_new_nodes(self, tables: list[Path], edge_files: list[Path]) -> list[str]:
        """Encode the new nodes' features and merge their arcs; returns their ids in node id order."""
        features = self.data.features
        tables_info = features.tables
        config = tables_info.feature_config
        widths = dense_widths(config, tables) if any(f.encoder == "dense" and not f.dimension
                                                     for f in config.values()) else {
            s.name: s.width for s in tables_info.layout if s.kind == "dense"}
        layout = feature_layout(config, widths)
        if [(s.name, s.kind, s.start, s.width) for s in layout] != \
                [(s.name, s.kind, s.start, s.width) for s in tables_info.layout]:
            raise InputError("the new node table's feature columns do not match the training ones "
                             f"({', '.join(s.name for s in tables_info.layout)})", path=tables[0])
        id_column = tables_info.entry["id_column"]
        names: list[str] = []
        rows, cols, vals, dense = [], [], [], []
        for path in tables:
            wanted = [id_column, *[s.name for s in layout if s.encoder != "embedding"]]
            for table, first_line in read_table_blocks(path, wanted, 4):
                encoded = encode_block(table, path, first_line, config, layout, features.dense_width,
                                       "row" if table_format(path) == "parquet" else "line")
                block_names = table.column(id_column).cast(pa.string()).to_pylist()
                known = pc.is_in(pa.array(block_names, pa.string()), value_set=self.names).to_numpy(
                    zero_copy_only=False)
                if known.any():
                    i = int(np.flatnonzero(known)[0])
                    raise InputError(f"node {block_names[i]!r} is already in the graph; new nodes must be new",
                                     path=path, line=first_line + i, field=id_column)
                rows.append(encoded.sparse.rows + len(names))
                cols.append(encoded.sparse.columns)
                vals.append(encoded.sparse.values)
                dense.append(encoded.dense)
                names.extend(block_names)
        if len(set(names)) != len(names):
            raise InputError("a new node appears twice in the new node tables", path=tables[0])
        all_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        order = np.argsort(all_rows, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(all_rows, minlength=len(names)))]).astype(np.int64)
        dense_all = np.concatenate(dense) if dense else np.zeros((0, features.dense_width), np.float32)
        for slot in layout:
            if slot.encoder == "embedding":
                source = embedding_source(config[slot.name], slot.name)
                dense_all[:, slot.start : slot.start + slot.width] = source.vectors(tables_info.entity_type, names)
        features.add_nodes(indptr, np.concatenate(cols)[order] if cols else np.zeros(0, np.int64),
                           np.concatenate(vals)[order] if vals else np.zeros(0, np.float32), dense_all)
        self._merge_arcs(names, edge_files)
        return names

    def _merge_arcs(self, new_names: list[str], edge_files: list[Path]) -> None:
        """Add the new edges (both directions unless sage.directed) to the neighbourhoods."""
        features = self.data.features
        new_index = pa.array(new_names, pa.string())
        tails, heads = [], []
        for path in edge_files:
            if not path.is_file():
                raise InputError("file not found", path=path)
            delimiter = "\t" if table_format(path) == "tsv" else ","
            table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                                   parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                   convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
            if table.num_columns not in (2, 3):
                raise InputError(f"an edge file has 2 (lhs, rhs) or 3 (lhs, rel, rhs) columns; this one has "
                                 f"{table.num_columns}", path=path, line=1)
            ends = []
            for column in (0, table.num_columns - 1):
                names = table.column(column).cast(pa.string())
                known = pc.index_in(names, value_set=self.names).to_numpy(zero_copy_only=False)
                new = pc.index_in(names, value_set=new_index).to_numpy(zero_copy_only=False)
                ids = np.where(~np.isnan(known.astype(np.float64)), np.nan_to_num(known.astype(np.float64))
                               + features.first, np.nan_to_num(new.astype(np.float64)) + features.extra_first)
                missing = np.isnan(known.astype(np.float64)) & np.isnan(new.astype(np.float64))
                if missing.any():
                    i = int(np.flatnonzero(missing)[0])
                    raise InputError(f"{names[i].as_py()!r} is neither a known node nor a new one", path=path,
                                     line=i + 1, field=str(column + 1))
                ends.append(ids.astype(np.int64))
            tails.append(ends[1] if self.sage.directed else np.concatenate([ends[0], ends[1]]))
            heads.append(ends[0] if self.sage.directed else np.concatenate([ends[1], ends[0]]))
        tail = np.concatenate(tails) if tails else np.zeros(0, np.int64)
        head = np.concatenate(heads) if heads else np.zeros(0, np.int64)
        if not self.sage.self_loops:
            tail, head = tail[tail != head], head[tail != head]
        order = np.lexsort((head, tail))
        tail, head = tail[order], head[order]
        old_indptr = np.asarray(self.data.indptr)
        n_old = len(old_indptr) - 1
        total_nodes = features.extra_first + len(new_names)
        extra = np.bincount(tail, minlength=total_nodes)
        base = np.concatenate([old_indptr, np.full(total_nodes - n_old, old_indptr[-1])])
        indptr = base + np.concatenate([[0], np.cumsum(extra)])
        positions = np.where(tail < n_old, old_indptr[np.minimum(tail, n_old - 1) + 1], old_indptr[-1])
        indices = np.insert(np.asarray(self.data.indices, dtype=np.int64), positions, head)
        self._set_graph(indptr.astype(np.int64), indices)


def load_sage(run_dir: str | Path, dataset: str | Path | None = None) -> SageModel:
    """A trained GraphSAGE run (`shardgraph train-sage`), for `predict_labels`."""
    return SageModel(run_dir, dataset)
