"""One training step on a batch of edges: batched negatives, loss, backward, in-place Adagrad.

A batch of B edges is cut into chunks of C. For each chunk the candidates of a side are
the chunk's own endpoints (batch negatives) plus U entities drawn uniformly from the
current partition, shared by the chunk; one batched matrix product (C chunks × C × (C+U))
scores them all. A candidate equal to the edge's own endpoint is masked out. With
`all_negs` the candidates are every entity of the partition. Both ends are corrupted.

Embedding rows are gathered once per table into a leaf tensor, so the backward pass
yields gradients only for the rows the batch used; those rows are updated in place
(row-wise Adagrad) in the shared tables, without locks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from shardgraph.config import TrainingConfig
from shardgraph.model.model import Direction, Model
from shardgraph.train.optim import adagrad_, dense_adagrad_, rowwise_adagrad_


@dataclass
class Table:
    """The embeddings of one (entity type, partition) in use: shared tensors and the live row count."""

    embeddings: Tensor  # (capacity, D), storage dtype; rows [0, count) are live
    state: Tensor  # (capacity,) float32 row-wise Adagrad accumulators
    count: int
    bias: Tensor | None = None  # (D,) global vector of the type, when model.global_bias
    bias_state: Tensor | None = None


@dataclass
class StepResult:
    loss: float
    edges: int


class BatchStep:
    """Computes the loss of batches and applies the updates. One per worker process."""

    def __init__(self, model: Model, training: TrainingConfig, relation_tables: dict[str, Tensor],
                 relation_state: dict[str, Tensor], device: torch.device | None = None) -> None:
        self.model = model
        self.training = training
        self.relation_tables = relation_tables
        self.relation_state = relation_state
        self.device = device or torch.device("cpu")
        self.lr = training.lr
        self.relation_lr = training.relation_lr or training.lr
        self.max_norm = model.config.model.max_norm
        self.regularizer = model.config.model.regularizer
        self.reg_weight = model.config.model.regularization_weight
        self.weights = model.weights.to(self.device)
        self.weighted = bool((model.weights != 1).any())

    # ------------------------------------------------------------------ public
    def train_batch(self, lhs_table: Table, rhs_table: Table, lhs: Tensor, rel: Tensor, rhs: Tensor,
                    generator: torch.Generator) -> float:
        """Train on edges (lhs, rel, rhs), (B,) each, of one batch group. Returns the summed loss."""
        n = lhs.shape[0]
        t = self.training
        if t.all_negs:
            chunk = n
        else:
            chunk = min(t.num_batch_negs, n) if t.num_batch_negs > 0 else n
        full = (n // chunk) * chunk
        loss = self._train_chunks(lhs_table, rhs_table, lhs[:full], rel[:full], rhs[:full], chunk, generator)
        if full < n:
            rest = n - full
            loss += self._train_chunks(lhs_table, rhs_table, lhs[full:], rel[full:], rhs[full:], rest, generator)
        return loss

    # ------------------------------------------------------------------ internals
    def _negatives(self, table: Table, chunks: int, generator: torch.Generator) -> Tensor:
        """Candidate ids drawn for each chunk: (chunks, U), or all rows (1, count) with all_negs."""
        if self.training.all_negs:
            return torch.arange(table.count, device=self.device).unsqueeze(0)
        u = self.training.num_uniform_negs
        if u == 0:
            return torch.empty((chunks, 0), dtype=torch.long, device=self.device)
        ids = torch.randint(table.count, (chunks, u), generator=generator, device=generator.device)
        return ids.to(self.device)

    def _embed(self, rows: Tensor, bias: Tensor | None) -> Tensor:
        """Apply the per-type global bias and the max-norm to gathered rows."""
        if bias is not None:
            rows = rows + bias
        if self.max_norm > 0:
            rows = torch.renorm(rows, 2, 0, self.max_norm)
        return rows

    def _train_chunks(self, lhs_table: Table, rhs_table: Table, lhs: Tensor, rel: Tensor, rhs: Tensor,
                      chunk: int, generator: torch.Generator) -> float:
        n = lhs.shape[0]
        chunks = n // chunk
        model = self.model
        lhs_neg = self._negatives(lhs_table, chunks, generator)
        rhs_neg = self._negatives(rhs_table, chunks, generator)
        same = lhs_table.embeddings is rhs_table.embeddings

        # one gather per table: positives and uniform negatives of both sides
        parts = [lhs, rhs, lhs_neg.reshape(-1), rhs_neg.reshape(-1)]
        if same:
            index = torch.cat(parts)
            leaf = lhs_table.embeddings.index_select(0, index).float().requires_grad_()
            theta_l, theta_r, theta_ln, theta_rn = leaf.split([p.shape[0] for p in parts])
            leaves = [(lhs_table, index, leaf)]
        else:
            index_l, index_r = torch.cat([parts[0], parts[2]]), torch.cat([parts[1], parts[3]])
            leaf_l = lhs_table.embeddings.index_select(0, index_l).float().requires_grad_()
            leaf_r = rhs_table.embeddings.index_select(0, index_r).float().requires_grad_()
            theta_l, theta_ln = leaf_l.split([n, parts[2].shape[0]])
            theta_r, theta_rn = leaf_r.split([n, parts[3].shape[0]])
            leaves = [(lhs_table, index_l, leaf_l), (rhs_table, index_r, leaf_r)]
        bias_leaves: dict[int, tuple[Table, Tensor]] = {}
        bias_l = self._bias_leaf(lhs_table, bias_leaves)
        bias_r = self._bias_leaf(rhs_table, bias_leaves)
        theta_l, theta_ln = self._embed(theta_l, bias_l), self._embed(theta_ln, bias_l)
        theta_r, theta_rn = self._embed(theta_r, bias_r), self._embed(theta_rn, bias_r)

        # relation parameters: the rows of the relations in this batch, as leaves
        if model.dynamic:
            used, rel_index = torch.unique(rel, return_inverse=True)
        else:
            used, rel_index = rel[:1], None
        rel_leaves = {key: table.index_select(0, used).requires_grad_() for key, table in
                      self.relation_tables.items()}
        relation = model.relations[int(rel[0])]
        to_rhs, to_lhs = model.directions(relation)

        loss_r, reg_r = self._direction(to_rhs, theta_l, theta_r, theta_rn, rhs, rhs_neg, rel_leaves, rel_index,
                                        chunks, chunk)
        loss_l, reg_l = self._direction(to_lhs, theta_r, theta_l, theta_ln, lhs, lhs_neg, rel_leaves, rel_index,
                                        chunks, chunk)
        per_edge = loss_r + loss_l
        if self.weighted:
            per_edge = per_edge * self.weights[rel]
        total = per_edge.sum()
        if self.regularizer != "none" and self.reg_weight > 0:
            total = total + self.reg_weight * (self._regularize(theta_l) + self._regularize(theta_r) + reg_r + reg_l)
        total.backward()

        for table, index, leaf in leaves:
            assert leaf.grad is not None
            rowwise_adagrad_(table.embeddings, table.state, index, leaf.grad, self.lr)
        for table, bias_leaf in bias_leaves.values():
            if bias_leaf.grad is not None and table.bias is not None and table.bias_state is not None:
                dense_adagrad_(table.bias, table.bias_state, bias_leaf.grad, self.lr)
        for key, leaf in rel_leaves.items():
            if leaf.grad is not None:
                adagrad_(self.relation_tables[key], self.relation_state[key], used, leaf.grad, self.relation_lr)
        return float(total.detach())

    @staticmethod
    def _bias_leaf(table: Table, leaves: dict[int, tuple[Table, Tensor]]) -> Tensor | None:
        """A leaf copy of the table's global bias for this batch (one per entity type)."""
        if table.bias is None:
            return None
        key = id(table.bias)
        if key not in leaves:
            leaves[key] = (table, table.bias.detach().float().clone().requires_grad_())
        return leaves[key][1]

    def _direction(self, direction: Direction, known: Tensor, positive: Tensor, negative: Tensor,
                   positive_ids: Tensor, negative_ids: Tensor, rel_leaves: dict[str, Tensor],
                   rel_index: Tensor | None, chunks: int, chunk: int) -> tuple[Tensor, Tensor]:
        """Per-edge loss of predicting `positive` from `known` among the chunk's candidates.

        known/positive: (n, D); negative: (chunks*U, D) or (count, D) with all_negs; ids alike.
        Returns (loss (n,), regularizer of the relation parameters used by the query).
        """
        model = self.model
        comparator = model.comparator
        n, dim = known.shape
        query_params = model.params_of(rel_leaves, direction.query_op) if direction.query_op else {}
        query = comparator.prepare(model.apply(direction.query_op, known, query_params, rel_index))
        cand_params = model.params_of(rel_leaves, direction.candidate_op) if direction.candidate_op else {}
        pos_vec = comparator.prepare(model.apply(direction.candidate_op, positive, cand_params, None))
        neg_vec = comparator.prepare(model.apply(direction.candidate_op, negative, cand_params, None))
        pos_score = comparator.pairs(query, pos_vec)

        t = self.training
        if t.all_negs:
            candidates = neg_vec.unsqueeze(0)
            candidate_ids = negative_ids
            query_chunks = query.unsqueeze(0)
        else:
            neg_vec = neg_vec.view(chunks, -1, dim)
            if t.num_batch_negs > 0:
                candidates = torch.cat([pos_vec.view(chunks, chunk, dim), neg_vec], dim=1)
                candidate_ids = torch.cat([positive_ids.view(chunks, chunk), negative_ids], dim=1)
            else:
                candidates, candidate_ids = neg_vec, negative_ids
            query_chunks = query.view(chunks, chunk, dim)
        neg_score = comparator.all_pairs(query_chunks, candidates).reshape(n, -1)
        rows_per_chunk = n if t.all_negs else chunk
        valid = (positive_ids.view(-1, rows_per_chunk, 1) != candidate_ids.unsqueeze(1)).reshape(n, -1)
        loss = model.loss(pos_score, neg_score, valid)
        reg = self._regularize_params(query_params, rel_index) if direction.query_op else loss.new_zeros(())
        if direction.candidate_op and not model.dynamic:
            reg = reg + self._regularize_params(cand_params, None) * n
        return loss, reg

    # ------------------------------------------------------------------ regularizers
    def _regularize(self, x: Tensor) -> Tensor:
        if self.regularizer == "l2":
            return x.pow(2).sum()
        if self._complex():
            half = x.shape[-1] // 2
            return (x[..., :half].pow(2) + x[..., half:].pow(2)).pow(1.5).sum()
        return x.abs().pow(3).sum()

    def _regularize_params(self, params: dict[str, Tensor], rel_index: Tensor | None) -> Tensor:
        if not params or self.regularizer == "none" or self.reg_weight <= 0:
            return torch.zeros((), device=self.device)
        rows = {k: (v if rel_index is None else v[rel_index]) for k, v in params.items()}
        if self.regularizer == "l2":
            return sum((v.pow(2).sum() for v in rows.values()), torch.zeros((), device=self.device))
        if "real" in rows and "imag" in rows:
            return (rows["real"].pow(2) + rows["imag"].pow(2)).pow(1.5).sum()
        return sum((v.abs().pow(3).sum() for k, v in rows.items() if k != "phase"),
                   torch.zeros((), device=self.device))

    def _complex(self) -> bool:
        return any(op.complex_valued for op in self.model.operators.values())
