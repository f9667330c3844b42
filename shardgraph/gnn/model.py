"""GraphSAGE layers and model in plain torch.

A layer maps source rows h_src (n_src, in) to destination rows (n_dst, out), where the
destinations are the first n_dst sources:

    mean: out_i = W_n · mean_{j ∈ N(i)} h_j + W_s · h_i + b
    gcn:  out_i = W · (h_i + Σ_{j ∈ N(i)} h_j) / (|N(i)| + 1) + b
    max:  out_i = max_{j ∈ N(i)} (W_n · h_j) + W_s · h_i + b     (0 where N(i) is empty)

Mean and gcn are linear in h, so the layer projects first when that is the smaller product
(always on sparse inputs). The neighbourhood arrives as a `Adjacency`: a (n_dst, n_src) CSR
matrix whose values make the aggregation (1/deg), plus the arc lists for max.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shardgraph.gnn.features import NodeInput
from shardgraph.gnn.sampler import Block
from shardgraph.gnn.sparse import SparseMatrix, sparse_mm

Input = Tensor | NodeInput


@dataclass
class Adjacency:
    """A block as torch tensors: `matrix` (n_dst, n_src) sparse CSR with the aggregation weights,
    `dst`, `src` (E,) arcs (used by max)."""

    matrix: SparseMatrix
    dst: Tensor
    src: Tensor
    num_dst: int
    num_src: int


def adjacency(block: Block, aggregator: str) -> Adjacency:
    """Aggregation matrix of a block: mean (1/deg per arc) or gcn (self arc added, 1/(deg+1))."""
    dst, src = block.dst, block.src
    if aggregator == "gcn":
        own = np.arange(block.num_dst, dtype=np.int64)
        dst, src = np.concatenate([dst, own]), np.concatenate([src, own])
        order = np.argsort(dst, kind="stable")
        dst, src = dst[order], src[order]
    counts = np.bincount(dst, minlength=block.num_dst)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    weights = (1.0 / np.maximum(counts, 1)).astype(np.float32)[dst]
    matrix = SparseMatrix.from_numpy(indptr, src, weights, (block.num_dst, block.num_src))
    return Adjacency(matrix, torch.from_numpy(dst), torch.from_numpy(np.ascontiguousarray(src)),
                     block.num_dst, block.num_src)


def full_adjacency(indptr: np.ndarray, indices: np.ndarray, aggregator: str) -> Adjacency:
    """The whole graph as one block (every node is a destination and a source)."""
    n = len(indptr) - 1
    counts = np.diff(indptr)
    dst = np.repeat(np.arange(n, dtype=np.int64), counts)
    return adjacency(Block(dst=dst, src=np.asarray(indices, dtype=np.int64), num_dst=n, num_src=n), aggregator)


def _project(x: Input, weight: Tensor, sparse_width: int) -> Tensor:
    """x @ weight for dense x (n, in) or NodeInput (sparse (n, S) and dense (n, D) against rows S..)."""
    if isinstance(x, Tensor):
        return x @ weight
    out = None
    if x.sparse is not None:
        out = sparse_mm(x.sparse, weight if x.dense is None else weight[:sparse_width])
    if x.dense is not None:
        part = x.dense @ weight[sparse_width:]
        out = part if out is None else out + part
    assert out is not None
    return out


def _dropout(x: Input, p: float, training: bool) -> Input:
    if not training or p == 0:
        return x
    if isinstance(x, Tensor):
        return F.dropout(x, p, True)
    sparse = x.sparse.with_values(F.dropout(x.sparse.values, p, True)) if x.sparse is not None else None
    dense = F.dropout(x.dense, p, True) if x.dense is not None else None
    return NodeInput(sparse, dense)


class SageLayer(nn.Module):
    """One GraphSAGE layer (see the module docstring); `sparse_width` > 0 for a NodeInput input."""

    def __init__(self, in_dim: int, out_dim: int, aggregator: str, sparse_width: int = 0) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.aggregator, self.sparse_width = in_dim, out_dim, aggregator, sparse_width
        parts = 1 if aggregator == "gcn" else 2
        self.weight = nn.Parameter(torch.empty(in_dim, parts * out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / max(self.in_dim, 1) ** 0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)

    def forward(self, x: Input, adj: Adjacency) -> Tensor:
        """x: (n_src, in) rows of the sources -> (n_dst, out)."""
        out = self.out_dim
        dense_in = isinstance(x, Tensor)
        if self.aggregator == "gcn":
            if dense_in and self.in_dim < out:
                return sparse_mm(adj.matrix, x) @ self.weight + self.bias  # type: ignore[arg-type]
            return sparse_mm(adj.matrix, _project(x, self.weight, self.sparse_width)) + self.bias
        if self.aggregator == "mean" and dense_in and self.in_dim < out:
            assert isinstance(x, Tensor)
            neighbours = sparse_mm(adj.matrix, x)
            return neighbours @ self.weight[:, :out] + x[: adj.num_dst] @ self.weight[:, out:] + self.bias
        # the self term only for the destinations (the first rows), the neighbour term for all sources
        neighbour_weight, self_weight = self.weight[:, :out], self.weight[:, out:]
        z = _project(x, neighbour_weight, self.sparse_width)
        own = x[: adj.num_dst] if isinstance(x, Tensor) else x.first_rows(adj.num_dst)
        if self.aggregator == "mean":
            neighbours = sparse_mm(adj.matrix, z)
        else:
            neighbours = torch.zeros(adj.num_dst, out, dtype=z.dtype).scatter_reduce(
                0, adj.dst[:, None].expand(-1, out), z[adj.src], "amax", include_self=False)
        return neighbours + _project(own, self_weight, self.sparse_width) + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_dim} -> {self.out_dim}, aggregator={self.aggregator}"


class GraphSage(nn.Module):
    """Layers of SageLayer with ReLU between them and dropout before each; logits (n_targets, classes)."""

    def __init__(self, sparse_width: int, dense_width: int, hidden: int, classes: int, layers: int,
                 aggregator: str, dropout: float) -> None:
        super().__init__()
        widths = [sparse_width + dense_width] + [hidden] * (layers - 1) + [classes]
        self.layers = nn.ModuleList(
            SageLayer(widths[i], widths[i + 1], aggregator, sparse_width if i == 0 else 0) for i in range(layers))
        self.dropout = dropout

    def forward(self, x: Input, adjacencies: list[Adjacency], return_hidden: bool = False) -> Tensor:
        """`adjacencies[i]` feeds layer i (the last one feeds the targets). With `return_hidden`,
        the input of the last layer for the targets (their representation) instead of logits."""
        h: Input = x
        for i, (layer, adj) in enumerate(zip(self.layers, adjacencies, strict=True)):
            if return_hidden and i == len(self.layers) - 1:
                assert isinstance(h, Tensor)
                return h[: adj.num_dst]
            out: Tensor = layer(_dropout(h, self.dropout, self.training), adj)
            h = F.relu(out) if i < len(self.layers) - 1 else out
        assert isinstance(h, Tensor)
        return h
