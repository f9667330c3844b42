"""Node features and labels of a dataset's node tables, by graph node id, ready for the model.

Sparse columns (hash, multi_hot) come back as a torch CSR tensor (n, S), L1 row-normalised if
asked; dense columns (numeric, dense, embedding) as (n, D) float32, numeric values standardised
with the training nodes' mean and standard deviation (missing: 0, with the missing flag set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from shardgraph.data.dataset import Dataset
from shardgraph.data.nodes import NodeTables, ranges
from shardgraph.gnn.sparse import SparseMatrix


@dataclass
class NodeInput:
    """Input features of n nodes: `sparse` (n, S) or None, `dense` (n, D) or None."""

    sparse: SparseMatrix | None
    dense: Tensor | None

    def first_rows(self, n: int) -> NodeInput:
        """The first n nodes' features."""
        return NodeInput(self.sparse.first_rows(n) if self.sparse is not None else None,
                         self.dense[:n] if self.dense is not None else None)


class CSRRows:
    """Rows of several CSR pieces (one per partition) addressed by one row id space."""

    def __init__(self, indptrs: list[np.ndarray], indices: list[np.ndarray], values: list[np.ndarray]) -> None:
        self.indptrs, self.indices, self.values = indptrs, indices, values
        self.offsets = np.concatenate([[0], np.cumsum([len(p) - 1 for p in indptrs])]).astype(np.int64)

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr (n+1,), indices, values) of the given rows, in their order."""
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        lengths = np.zeros(len(rows), dtype=np.int64)
        starts = np.zeros(len(rows), dtype=np.int64)
        for p in np.unique(part):
            sel = part == p
            local = rows[sel] - self.offsets[p]
            starts[sel] = self.indptrs[p][local]
            lengths[sel] = self.indptrs[p][local + 1] - starts[sel]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        cols = np.empty(int(indptr[-1]), dtype=np.int64)
        vals = np.empty(int(indptr[-1]), dtype=np.float32)
        for p in np.unique(part):
            sel = np.flatnonzero(part == p)
            at = ranges(indptr[sel], lengths[sel])
            source = ranges(starts[sel], lengths[sel])
            cols[at] = self.indices[p][source]
            vals[at] = self.values[p][source]
        return indptr, cols, vals


class FeatureStore:
    """Features and labels of every node of the graph (node ids as in the dataset's CSR)."""

    def __init__(self, dataset: Dataset, type_offsets: np.ndarray, type_names: tuple[str, ...],
                 normalize: str = "l1") -> None:
        self.tables = NodeTables(dataset.path, dataset.manifest)
        t = type_names.index(self.tables.entity_type)
        self.first, self.count = int(type_offsets[t]), int(type_offsets[t + 1] - type_offsets[t])
        self.num_nodes = int(type_offsets[-1])
        partitions = dataset.entity_types[self.tables.entity_type].partitions
        arrays = [[self.tables.array(p, name) for p in range(partitions)]
                  for name in ("indptr", "indices", "values", "label_indptr", "labels")]
        self.sparse = CSRRows(arrays[0], arrays[1], arrays[2])
        self.labels = CSRRows(arrays[3], arrays[4], [np.ones(len(a), np.float32) for a in arrays[4]])
        self.dense_parts = [self.tables.array(p, "dense") for p in range(partitions)]
        self.sparse_width, self.dense_width = self.tables.sparse_width, self.tables.dense_width
        self.normalize = normalize
        self.classes = self.tables.classes
        self.numeric = [s for s in self.tables.layout if s.encoder == "numeric"]
        self.mean = np.zeros(len(self.numeric), np.float64)
        self.std = np.ones(len(self.numeric), np.float64)
        self.extra_first = self.num_nodes  # node ids from here on are new nodes (`add_nodes`)
        self.extra_sparse: CSRRows | None = None
        self.extra_dense = np.zeros((0, self.dense_width), np.float32)

    def add_nodes(self, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, dense: np.ndarray) -> None:
        """Features of new nodes (ids num_nodes, num_nodes + 1, ...), encoded as at import."""
        self.extra_sparse = CSRRows([indptr], [indices], [values])
        self.extra_dense = dense

    def _rows(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions among `nodes` of the table's type, their row within the type)."""
        inside = np.flatnonzero((nodes >= self.first) & (nodes < self.first + self.count))
        return inside, nodes[inside] - self.first

    def _sparse_rows(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR (indptr (n+1,), columns, values) of the sparse features of the nodes, new ones included."""
        inside, rows = self._rows(nodes)
        pieces = [(inside, self.sparse, rows)]
        if self.extra_sparse is not None:
            new = np.flatnonzero(nodes >= self.extra_first)
            pieces.append((new, self.extra_sparse, nodes[new] - self.extra_first))
        lengths = np.zeros(len(nodes), dtype=np.int64)
        gathered = []
        for where, source, source_rows in pieces:
            indptr, cols, vals = source.gather(source_rows)
            lengths[where] = np.diff(indptr)
            gathered.append((where, indptr, cols, vals))
        full = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        cols_out = np.empty(int(full[-1]), dtype=np.int64)
        vals_out = np.empty(int(full[-1]), dtype=np.float32)
        for where, indptr, cols, vals in gathered:
            at = ranges(full[where], np.diff(indptr))
            cols_out[at], vals_out[at] = cols, vals
        return full, cols_out, vals_out

    def label_lists(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indptr (n+1,), label ids): the labels of each node (none for nodes of other types)."""
        inside, rows = self._rows(nodes)
        indptr, cols, _ = self.labels.gather(rows)
        lengths = np.zeros(len(nodes), dtype=np.int64)
        lengths[inside] = np.diff(indptr)
        return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), cols

    def primary_labels(self, nodes: np.ndarray) -> np.ndarray:
        """(n,) the first label of each node, -1 for unlabelled ones."""
        indptr, labels = self.label_lists(nodes)
        out = np.full(len(nodes), -1, dtype=np.int64)
        has = np.diff(indptr) > 0
        out[has] = labels[indptr[:-1][has]]
        return out

    def fit_numeric(self, train_nodes: np.ndarray) -> None:
        """Mean and standard deviation of the numeric columns over the training nodes (present values)."""
        if not self.numeric:
            return
        dense = self._dense_raw(train_nodes)
        for k, slot in enumerate(self.numeric):
            present = dense[:, slot.start + 1] == 0
            values = dense[present, slot.start].astype(np.float64)
            if len(values):
                self.mean[k] = values.mean()
                self.std[k] = values.std() or 1.0

    def _dense_raw(self, nodes: np.ndarray) -> np.ndarray:
        out = np.zeros((len(nodes), self.dense_width), dtype=np.float32)
        inside, rows = self._rows(nodes)
        offsets = self.sparse.offsets
        part = np.searchsorted(offsets, rows, side="right") - 1
        for p in np.unique(part):
            sel = part == p
            local = rows[sel] - offsets[p]
            order = np.argsort(local)
            block = np.asarray(self.dense_parts[p][local[order]])
            target = inside[sel][order]
            out[target] = block
        new = np.flatnonzero(nodes >= self.extra_first)
        out[new] = self.extra_dense[nodes[new] - self.extra_first]
        return out

    def gather(self, nodes: np.ndarray) -> NodeInput:
        """Input features of the given node ids (n,)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        sparse = dense = None
        if self.sparse_width:
            indptr, cols, vals = self._sparse_rows(nodes)
            lengths = np.diff(indptr)
            if self.normalize == "l1" and len(vals):
                sums = np.add.reduceat(np.abs(vals), indptr[:-1][lengths > 0])
                vals = vals / np.repeat(np.maximum(sums, 1e-12), lengths[lengths > 0])
            sparse = SparseMatrix.from_numpy(indptr, cols, vals, (len(nodes), self.sparse_width))
        if self.dense_width:
            raw = self._dense_raw(nodes)
            for k, slot in enumerate(self.numeric):
                present = raw[:, slot.start + 1] == 0
                raw[:, slot.start] = np.where(present, (raw[:, slot.start] - self.mean[k]) / self.std[k], 0.0)
            dense = torch.from_numpy(raw)
        return NodeInput(sparse, dense)
