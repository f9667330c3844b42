"""Layer-wise inference: every node's exact (all-neighbour) output, one layer at a time.

Sampled mini-batches recompute the shared neighbours of every batch; for predicting many nodes
it is cheaper to compute layer l for all nodes, in chunks of rows, then layer l+1 from it. The
result equals the full-graph model (mean and gcn aggregators). Memory: two (N, hidden) float32
arrays, plus one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from shardgraph.data.nodes import ranges
from shardgraph.gnn.features import FeatureStore
from shardgraph.gnn.model import GraphSage, SageLayer, _project
from shardgraph.gnn.sparse import SparseMatrix, sparse_mm

CHUNK = 1 << 16


def _rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray, num_src: int, self_arc: bool) -> SparseMatrix:
    """Aggregation matrix (len(rows), num_src): the mean over each row's neighbours (and itself with self_arc)."""
    starts = np.asarray(indptr[rows], dtype=np.int64)
    degree = np.asarray(indptr[rows + 1], dtype=np.int64) - starts
    cols = np.asarray(indices[ranges(starts, degree)], dtype=np.int64)
    if self_arc:  # gcn: the node itself is one more member of the mean
        position = np.concatenate([[0], np.cumsum(degree + 1)])[:-1] + degree
        merged = np.empty(len(cols) + len(rows), dtype=np.int64)
        own = np.zeros(len(merged), dtype=bool)
        own[position] = True
        merged[own], merged[~own] = rows, cols
        cols, degree = merged, degree + 1
    crow = np.concatenate([[0], np.cumsum(degree)]).astype(np.int64)
    values = np.repeat(1.0 / np.maximum(degree, 1), degree).astype(np.float32)
    return SparseMatrix.from_numpy(crow, cols, values, (len(rows), num_src))


def _layer_rows(layer: SageLayer, inputs: Tensor | None, features: FeatureStore, indptr: np.ndarray,
                indices: np.ndarray, rows: np.ndarray, projected: Tensor | None) -> Tensor:
    """Output (len(rows), out) of `layer` for some destination rows, given the projected sources."""
    n = len(indptr) - 1
    gcn = layer.aggregator == "gcn"
    own_input = inputs[torch.from_numpy(rows)] if inputs is not None else features.gather(rows)
    if projected is not None:  # sources already multiplied by the neighbour weight (N, out)
        neighbours = sparse_mm(_rows(indptr, indices, rows, n, gcn), projected)
    else:  # aggregate the (N, in) inputs first, then multiply (fewer products for the last layer)
        assert inputs is not None
        neighbours = sparse_mm(_rows(indptr, indices, rows, n, gcn), inputs) @ layer.weight[:, : layer.out_dim]
    if gcn:
        return neighbours + layer.bias
    return neighbours + _project(own_input, layer.weight[:, layer.out_dim :], layer.sparse_width) + layer.bias


@torch.no_grad()
def iter_layerwise_logits(model: GraphSage, features: FeatureStore, indptr: np.ndarray, indices: np.ndarray,
                          targets: np.ndarray, chunk: int = CHUNK) -> Iterator[Tensor]:
    """(len(targets), C) logits of the model over the whole graph (every neighbour, eval mode), chunk by
    chunk of targets, so that the (T, C) matrix is never held whole."""
    model.eval()
    n = len(indptr) - 1
    inputs: Tensor | None = None  # None: the layer's input is the node features
    layers = list(model.layers)
    for i, layer in enumerate(layers):
        assert isinstance(layer, SageLayer)
        last = i == len(layers) - 1
        projected = None
        if not (last and inputs is not None and layer.in_dim <= layer.out_dim * 4):
            neighbour_weight = layer.weight[:, : layer.out_dim]
            projected = torch.empty(n, layer.out_dim)
            for start in range(0, n, CHUNK):
                rows = np.arange(start, min(n, start + CHUNK))
                source = inputs[start : start + len(rows)] if inputs is not None else features.gather(rows)
                projected[start : start + len(rows)] = _project(source, neighbour_weight, layer.sparse_width)
        if last:
            for start in range(0, len(targets), chunk):
                yield _layer_rows(layer, inputs, features, indptr, indices, targets[start : start + chunk], projected)
            return
        out = torch.empty(n, layer.out_dim)
        for start in range(0, n, CHUNK):
            rows = np.arange(start, min(n, start + CHUNK))
            out[start : start + len(rows)] = _layer_rows(layer, inputs, features, indptr, indices, rows, projected)
        inputs = F.relu_(out)  # in place: one (N, hidden) array, not two
