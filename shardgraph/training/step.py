"""One training step on a batch of edges: batched negatives, loss, gradients, in-place Adagrad.

A batch of B edges is cut into chunks of C. For each chunk the candidates of a side are
the chunk's own endpoints (batch negatives) plus U entities drawn uniformly from the
current partition and shared by the chunk: one batched matrix product per block scores
them all. A candidate equal to the edge's own endpoint is masked out. With `all_negs` the
candidates are every entity of the partition. Both ends are corrupted.

With `self_negatives` each edge (h, r, t) also has its own query entity as one more negative:
h among the rhs candidates of (h, r, ?), t among the lhs candidates of (?, r, t), one score
per edge. Sampled negatives almost never hold it, and without it nothing stops score(h, r, h)
from growing with |h|² (a dot product). It is not a negative where it is the positive (the
edge is a self-loop) or where (h, r, h) (resp. (t, r, t)) is a training edge of the bucket.

Where the two directions score the same pairs (per-relation operators, or dynamic
relations with operator none, and a symmetric comparator), the chunk's batch-negative
block is computed once and used transposed by the other direction.

The comparator and loss gradients are written by hand (they are most of the cost);
autograd carries them through the operators into leaf copies of the rows the batch used,
which are then updated in the shared tables (row-wise Adagrad, no locks).

Models scored by a plain dot product (operator none, comparator dot: the walks' skip-gram) on
float32 or bfloat16 tables on the CPU take a fused compiled step instead (`dot_step_f32` /
`dot_step_bf16` in shardgraph/_kernels.c): the same losses, negatives, sampling corrections and
updates, applied after each chunk, with no interpreter work per chunk. With few negatives per edge
it is several times faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from shardgraph.config import TrainingConfig
from shardgraph.model.comparators import chunk_scores, chunk_scores_backward, pair_scores, pair_scores_backward
from shardgraph.model.losses import (
    SoftmaxLoss,
    loss_and_grad,
    loss_and_grad_excluding,
    softmax_blocks_fused,
    softmax_loss_and_grad_blocks,
)
from shardgraph.model.model import Model
from shardgraph.model.operators import Params
from shardgraph.training.optim import adagrad_, dense_adagrad_, rowwise_adagrad_
from shardgraph.utils.kernels import kernels

FUSED_LOSSES = {"ranking": 0, "logistic": 1, "softmax": 2}  # the loss codes of dot_step_f32 / _bf16


def fusable(model: Model, training: TrainingConfig, device: torch.device) -> bool:
    """Whether every batch of the model can take the fused compiled step: the kernel is built, the device is
    the CPU, a plain dot product with no operator, and nothing the kernel does not do (a bias, max-norm,
    regulariser, weights, own negatives). The tables must also be float32 or bfloat16 (_fused_table)."""
    m = model.config.model
    return (training.fused_step and kernels() is not None and device.type == "cpu"
            and all(rel.operator == "none" for rel in model.relations)
            and model.comparator.name == "dot" and model.loss.name in FUSED_LOSSES
            and m.max_norm == 0 and not m.global_bias
            and (m.regularizer == "none" or m.regularization_weight == 0) and not bool((model.weights != 1).any())
            and not training.all_negs and not training.self_negatives)


def _fused_table(table: Table) -> bool:
    """The fused step reads and writes the table in place: float32 or bfloat16 rows on the CPU, float32 state."""
    e = table.embeddings
    return (e.dtype in (torch.float32, torch.bfloat16) and e.device.type == "cpu" and e.stride(1) == 1
            and table.bias is None and table.state.dtype == torch.float32 and table.state.is_contiguous())


@dataclass
class Table:
    """The embeddings of one (entity type, partition) in use: shared tensors and the live row count."""

    embeddings: Tensor  # (capacity, D), storage dtype; rows [0, count) are live
    state: Tensor  # (capacity,) float32 row-wise Adagrad accumulators
    count: int
    bias: Tensor | None = None  # (D,) global vector of the type, when model.global_bias
    bias_state: Tensor | None = None


Corrections = tuple[Tensor, Tensor]  # log expected count of each lhs / rhs row among the negatives


@dataclass
class OwnNegatives:
    """Each edge's query entity as a negative of its own query (training.self_negatives), per direction."""

    rhs_side: Tensor  # (n, D) the lhs entity transformed as an rhs candidate
    rhs_invalid: Tensor  # (n,) bool: not a negative of the rhs query (a self-loop)
    lhs_side: Tensor  # (n, D) the rhs entity transformed as an lhs candidate
    lhs_invalid: Tensor  # (n,) bool


@dataclass
class StepResult:
    """The loss of a batch and the leaf tensors holding its gradients."""

    loss: float
    leaves: list[tuple[Table, Tensor, Tensor]]  # (table, row ids, gathered rows with .grad)
    bias_leaves: list[tuple[Table, Tensor]]
    relation_leaves: dict[str, Tensor]  # parameter rows of `relations_used`, with .grad
    relations_used: Tensor


class _Grads:
    """Gradients for tensors of the autograd graph, summed per tensor, for one backward pass."""

    def __init__(self) -> None:
        self.items: dict[int, tuple[bool, Tensor]] = {}
        self.tensors: dict[int, Tensor] = {}

    def pairs(self) -> list[tuple[Tensor, Tensor]]:
        return [(self.tensors[key], grad) for key, (_, grad) in self.items.items()]

    def add(self, tensor: Tensor, grad: Tensor) -> None:
        if not tensor.requires_grad or grad.numel() == 0:
            return
        key = id(tensor)
        self.tensors[key] = tensor
        if key in self.items:
            owned, total = self.items[key]
            if owned:  # a sum this object made: add in place
                total.add_(grad)
            else:
                self.items[key] = (True, total + grad)
        else:
            self.items[key] = (False, grad)  # not ours to write into: the caller may hold it


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
        self.complex = any(op.complex_valued for op in model.operators.values())
        self.fused = fusable(model, training, self.device)

    # ------------------------------------------------------------------ public
    def train_batch(self, lhs_table: Table, rhs_table: Table, lhs: Tensor, rel: Tensor, rhs: Tensor,
                    generator: torch.Generator, corrections: Corrections | None = None,
                    self_loops: Tensor | None = None) -> float:
        """Train on edges (lhs, rel, rhs), (B,) each, of one batch group. Returns the summed loss.

        `corrections` (training.sampling_correction) are subtracted from the candidates' scores.
        `self_loops` (training.self_negatives): sorted keys entity * R + relation of the bucket's
        training self-loops, whose entity is not a negative of its own query."""
        if (self.fused and self_loops is None and _fused_table(lhs_table) and _fused_table(rhs_table)
                and lhs_table.embeddings.dtype == rhs_table.embeddings.dtype
                and lhs_table.embeddings.stride(0) == rhs_table.embeddings.stride(0)):
            return self._train_fused(lhs_table, rhs_table, lhs, rhs, generator, corrections)
        loss = 0.0
        for rows, chunk in self.chunk_parts(lhs.shape[0]):
            loss += self._train_chunks(lhs_table, rhs_table, lhs[rows], rel[rows], rhs[rows], chunk, generator,
                                       corrections, self_loops)
        return loss

    def chunk_parts(self, n: int) -> list[tuple[slice, int]]:
        """How a batch of n edges is cut into chunks that share negatives: (rows, chunk size) of the part
        made of whole chunks, then of the remainder (one smaller chunk)."""
        t = self.training
        chunk = n if t.all_negs or t.num_batch_negs <= 0 else min(t.num_batch_negs, n)
        full = (n // chunk) * chunk
        parts = [(slice(0, full), chunk)]
        if full < n:
            parts.append((slice(full, n), n - full))
        return parts

    # ------------------------------------------------------------------ internals
    def _train_fused(self, lhs_table: Table, rhs_table: Table, lhs: Tensor, rhs: Tensor,
                     generator: torch.Generator, corrections: Corrections | None) -> float:
        """train_batch through dot_step_f32 / dot_step_bf16: the same chunks and uniform negatives, drawn the
        same way, the same corrections."""
        library = kernels()
        assert library is not None
        t = self.training
        n, dim = lhs.shape[0], lhs_table.embeddings.shape[1]
        batch_negs = t.num_batch_negs > 0
        chunk = min(t.num_batch_negs, n) if batch_negs else n
        chunks = -(-n // chunk)
        lhs_neg = self._negatives(lhs_table, chunks, generator).contiguous()
        rhs_neg = self._negatives(rhs_table, chunks, generator).contiguous()
        if lhs.stride(0) != rhs.stride(0) or lhs.dtype != torch.int64 or rhs.dtype != torch.int64:
            lhs, rhs = lhs.long().contiguous(), rhs.long().contiguous()
        left, right = lhs_table.embeddings, rhs_table.embeddings
        if corrections is not None:
            corrections = (corrections[0].float().contiguous(), corrections[1].float().contiguous())
        correction_ptrs = (corrections[0].data_ptr(), corrections[1].data_ptr()) if corrections else (None, None)
        args = (left.data_ptr(), lhs_table.state.data_ptr(), right.data_ptr(), rhs_table.state.data_ptr(),
                left.stride(0), dim, lhs.data_ptr(), rhs.data_ptr(), lhs.stride(0), n, chunk, int(batch_negs),
                lhs_neg.data_ptr(), rhs_neg.data_ptr(), lhs_neg.shape[1], FUSED_LOSSES[self.model.loss.name],
                self.model.loss.margin, self.lr, *correction_ptrs)
        if left.dtype == torch.bfloat16:  # stochastic rounding of the writes, seeded from the batch's generator
            loss = library.dot_step_bf16(*args, int(torch.randint(1 << 62, (1,), generator=generator).item()))
        else:
            loss = library.dot_step_f32(*args)
        if loss < 0:  # every loss is >= 0: the kernel could not allocate its scratch
            raise MemoryError(f"the training step could not allocate the scratch of a chunk of {chunk} edges")
        return float(loss)

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

    @staticmethod
    def _bias_leaf(table: Table, leaves: dict[int, tuple[Table, Tensor]]) -> Tensor | None:
        """A leaf copy of the table's global bias for this batch (one per entity type)."""
        if table.bias is None:
            return None
        key = id(table.bias)
        if key not in leaves:
            leaves[key] = (table, table.bias.detach().float().clone().requires_grad_())
        return leaves[key][1]

    def _transform(self, prefix: str | None, x: Tensor, params: Params, rel_index: Tensor | None) -> Tensor:
        return self.model.comparator.prepare(self.model.apply(prefix, x, params, rel_index))

    def _train_chunks(self, lhs_table: Table, rhs_table: Table, lhs: Tensor, rel: Tensor, rhs: Tensor,
                      chunk: int, generator: torch.Generator, corrections: Corrections | None,
                      self_loops: Tensor | None) -> float:
        chunks = lhs.shape[0] // chunk
        lhs_neg = self._negatives(lhs_table, chunks, generator)
        rhs_neg = self._negatives(rhs_table, chunks, generator)
        result = self.compute(lhs_table, rhs_table, lhs, rel, rhs, lhs_neg, rhs_neg, chunk, corrections,
                              self_loops)
        self.apply(result)
        return result.loss

    def apply(self, result: StepResult) -> None:
        """Row-wise Adagrad on the rows the batch used; Adagrad on biases and relation parameters."""
        for table, index, leaf_tensor in result.leaves:
            if leaf_tensor.grad is not None:
                rowwise_adagrad_(table.embeddings, table.state, index, leaf_tensor.grad, self.lr)
        for table, bias_leaf in result.bias_leaves:
            if bias_leaf.grad is not None and table.bias is not None and table.bias_state is not None:
                dense_adagrad_(table.bias, table.bias_state, bias_leaf.grad, self.lr)
        for key, rel_leaf in result.relation_leaves.items():
            if rel_leaf.grad is not None:
                adagrad_(self.relation_tables[key], self.relation_state[key], result.relations_used, rel_leaf.grad,
                         self.relation_lr)

    def uses_own_negatives(self, lhs_table: Table, rhs_table: Table) -> bool:
        """training.self_negatives applies: both ends index one table (with all_negs every entity,
        the query's own included, is already a candidate)."""
        return self.training.self_negatives and not self.training.all_negs and lhs_table is rhs_table

    def compute(self, lhs_table: Table, rhs_table: Table, lhs: Tensor, rel: Tensor, rhs: Tensor, lhs_neg: Tensor,
                rhs_neg: Tensor, chunk: int, corrections: Corrections | None = None,
                self_loops: Tensor | None = None) -> StepResult:
        """Loss of edges (lhs, rel, rhs) (n,) in chunks of `chunk` against the given uniform negatives
        ((chunks, U) ids per side, or (1, count) with all_negs), and the gradients of every row,
        bias and relation parameter it used (in the `.grad` of the returned leaves). `self_loops`:
        see train_batch."""
        n = lhs.shape[0]
        chunks = n // chunk
        model = self.model

        # gather the rows the batch uses (positives and uniform negatives of both sides) into
        # leaf tensors: their gradients are the updates of exactly those rows
        leaves = [(table, index, table.embeddings.index_select(0, index).float().requires_grad_())
                  for table, index in ((lhs_table, lhs), (rhs_table, rhs), (lhs_table, lhs_neg.reshape(-1)),
                                       (rhs_table, rhs_neg.reshape(-1)))]
        theta_l, theta_r, theta_ln, theta_rn = (leaf for _, _, leaf in leaves)
        bias_leaves: dict[int, tuple[Table, Tensor]] = {}
        bias_l = self._bias_leaf(lhs_table, bias_leaves)
        bias_r = self._bias_leaf(rhs_table, bias_leaves)
        theta_l, theta_ln = self._embed(theta_l, bias_l), self._embed(theta_ln, bias_l)
        theta_r, theta_rn = self._embed(theta_r, bias_r), self._embed(theta_rn, bias_r)

        # relation parameters: the rows of the relations in this batch, as leaves
        if model.dynamic and self.relation_tables:
            used, rel_index = torch.unique(rel, return_inverse=True)
        else:
            used, rel_index = rel[:1], None
        rel_leaves = {key: table.index_select(0, used).requires_grad_() for key, table in
                      self.relation_tables.items()}
        to_rhs, to_lhs = model.directions(model.relations[int(rel[0])])

        def params(prefix: str | None) -> Params:
            return model.params_of(rel_leaves, prefix) if prefix else {}

        # transformed vectors: query and candidates of each direction
        query_r = self._transform(to_rhs.query_op, theta_l, params(to_rhs.query_op), rel_index)
        pos_r = self._transform(to_rhs.candidate_op, theta_r, params(to_rhs.candidate_op), None)
        neg_r = self._transform(to_rhs.candidate_op, theta_rn, params(to_rhs.candidate_op), None)
        # every comparator is symmetric, so the directions score the same pairs when each one's
        # query transform is the other's candidate transform
        symmetric = to_lhs.query_op == to_rhs.candidate_op and to_lhs.candidate_op == to_rhs.query_op
        if symmetric:
            query_l, pos_l = pos_r, query_r
        else:
            query_l = self._transform(to_lhs.query_op, theta_r, params(to_lhs.query_op), rel_index)
            pos_l = self._transform(to_lhs.candidate_op, theta_l, params(to_lhs.candidate_op), None)
        neg_l = self._transform(to_lhs.candidate_op, theta_ln, params(to_lhs.candidate_op), None)
        own = None
        if self.uses_own_negatives(lhs_table, rhs_table):
            loop = lhs == rhs
            own = OwnNegatives(self._transform(to_rhs.candidate_op, theta_l, params(to_rhs.candidate_op), None),
                               loop | self._known_self_loop(lhs, rel, self_loops),
                               self._transform(to_lhs.candidate_op, theta_r, params(to_lhs.candidate_op), None),
                               loop | self._known_self_loop(rhs, rel, self_loops))

        grads = _Grads()
        weight = self.weights[rel] if self.weighted else None
        loss = self._score_both(query_r, pos_r, neg_r, rhs, rhs_neg, query_l, pos_l, neg_l, lhs, lhs_neg,
                                symmetric, chunks, chunk, weight, grads, corrections, own)
        total = float(loss.sum())
        outputs, output_grads = [], []
        for tensor, grad in grads.pairs():
            if tensor.grad_fn is None:  # a leaf itself (no operator, bias or norm on the way): no autograd needed
                tensor.grad = grad if tensor.grad is None else tensor.grad + grad
            else:
                outputs.append(tensor)
                output_grads.append(grad)
        if self.regularizer != "none" and self.reg_weight > 0:
            reg = self._regularize(theta_l) + self._regularize(theta_r)
            for direction in (to_rhs, to_lhs):
                if direction.query_op:
                    reg = reg + self._regularize_params(params(direction.query_op), rel_index)
                if direction.candidate_op and not model.dynamic:
                    reg = reg + self._regularize_params(params(direction.candidate_op), None) * n
            reg = self.reg_weight * reg
            total += float(reg.detach())
            outputs.append(reg)
            output_grads.append(torch.ones_like(reg))
        if outputs:
            torch.autograd.backward(outputs, output_grads)
        return StepResult(total, leaves, list(bias_leaves.values()), rel_leaves, used)

    def _known_self_loop(self, entity: Tensor, rel: Tensor, self_loops: Tensor | None) -> Tensor:
        """(n,) bool: (entity, rel, entity) is one of the training self-loops (sorted keys entity * R + rel)."""
        if self_loops is None or self_loops.numel() == 0:
            return torch.zeros_like(entity, dtype=torch.bool)
        keys = entity * len(self.model.relations) + rel
        found = torch.searchsorted(self_loops, keys).clamp_max(self_loops.numel() - 1)
        return self_loops[found] == keys

    def _score_both(self, query_r: Tensor, pos_r: Tensor, neg_r: Tensor, rhs: Tensor, rhs_neg: Tensor,
                    query_l: Tensor, pos_l: Tensor, neg_l: Tensor, lhs: Tensor, lhs_neg: Tensor, symmetric: bool,
                    chunks: int, chunk: int, weight: Tensor | None, grads: _Grads,
                    corrections: Corrections | None = None, own: OwnNegatives | None = None) -> Tensor:
        """Loss (n,) of both directions; adds d(loss)/d(vectors) to `grads`.

        Each direction: a query (n, D) against its positive (n, D), the chunk's positives
        (batch negatives), the uniform negatives (chunks*U, D) or all entities (count, D), and
        with `own` the edge's own query entity (n, D).
        """
        name = self.model.comparator.name
        t = self.training
        n, dim = query_r.shape
        use_batch = t.num_batch_negs > 0 and not t.all_negs
        qr, pr, nr = query_r.detach(), pos_r.detach(), neg_r.detach()
        ql, pl, nl = query_l.detach(), pos_l.detach(), neg_l.detach()

        def chunked(x: Tensor) -> Tensor:
            return x.view(1, n, dim) if t.all_negs else x.view(chunks, -1, dim)

        def uniform_block(q: Tensor, u: Tensor) -> tuple[Tensor, Tensor | None]:
            return chunk_scores(name, chunked(q), u.view(1, -1, dim) if t.all_negs else chunked(u))

        def chunked_ids(ids: Tensor) -> Tensor:  # the batch block's candidates (never with all_negs)
            return ids.view(chunks, chunk)

        # positives
        pos_score_r, pos_cache_r = pair_scores(name, qr, pr)
        if symmetric:
            pos_score_l, pos_cache_l = pos_score_r, pos_cache_r
        else:
            pos_score_l, pos_cache_l = pair_scores(name, pl, ql)  # score(lhs candidate, rhs query)

        # candidate blocks of each direction: (scores (chunks, chunk, W), candidate ids (chunks, W))
        blocks_r: list[tuple[Tensor, Tensor]] = []
        blocks_l: list[tuple[Tensor, Tensor]] = []
        caches: dict[str, Tensor | None] = {}
        if use_batch:
            score_rb, caches["rb"] = chunk_scores(name, chunked(qr), chunked(pr))
            blocks_r.append((score_rb, chunked_ids(rhs)))
            if symmetric:
                # the lhs direction scores the same pairs: its block is this one transposed (a copy,
                # since the losses overwrite their blocks)
                blocks_l.append((score_rb.transpose(1, 2).contiguous(), chunked_ids(lhs)))
            else:
                score_lb, caches["lb"] = chunk_scores(name, chunked(ql), chunked(pl))
                blocks_l.append((score_lb, chunked_ids(lhs)))
        if rhs_neg.numel():
            score_ru, caches["ru"] = uniform_block(qr, nr)
            blocks_r.append((score_ru, rhs_neg))
        if lhs_neg.numel():
            score_lu, caches["lu"] = uniform_block(ql, nl)
            blocks_l.append((score_lu, lhs_neg))

        own_r: tuple[Tensor, Tensor] | None = None
        own_l: tuple[Tensor, Tensor] | None = None
        if own is not None:
            own_vectors_r, own_vectors_l = own.rhs_side.detach(), own.lhs_side.detach()
            own_score_r, own_cache_r = pair_scores(name, qr, own_vectors_r)
            own_score_l, own_cache_l = pair_scores(name, ql, own_vectors_l)
            own_r, own_l = (own_score_r, own.rhs_invalid), (own_score_l, own.lhs_invalid)

        correction_l, correction_r = corrections if corrections is not None else (None, None)
        loss_r, d_pos_r, d_blocks_r, d_own_r = self._loss(pos_score_r, rhs, blocks_r, correction_r, weight, n, chunk,
                                                          own_r)
        loss_l, d_pos_l, d_blocks_l, d_own_l = self._loss(pos_score_l, lhs, blocks_l, correction_l, weight, n, chunk,
                                                          own_l)
        if own is not None:
            assert d_own_r is not None and d_own_l is not None
            dq, do = pair_scores_backward(name, qr, own_vectors_r, d_own_r, own_cache_r)
            grads.add(query_r, dq)
            grads.add(own.rhs_side, do)
            dq, do = pair_scores_backward(name, ql, own_vectors_l, d_own_l, own_cache_l)
            grads.add(query_l, dq)
            grads.add(own.lhs_side, do)

        # back through the comparator, by hand
        if symmetric:
            dq, dp = pair_scores_backward(name, qr, pr, d_pos_r + d_pos_l, pos_cache_r)
            grads.add(query_r, dq)
            grads.add(pos_r, dp)
        else:
            dq, dp = pair_scores_backward(name, qr, pr, d_pos_r, pos_cache_r)
            grads.add(query_r, dq)
            grads.add(pos_r, dp)
            dp_l, dq_l = pair_scores_backward(name, pl, ql, d_pos_l, pos_cache_l)
            grads.add(query_l, dq_l)
            grads.add(pos_l, dp_l)
        index_r = index_l = 0
        if use_batch:
            d_rb = d_blocks_r[0]
            if symmetric:
                d_rb = d_rb + d_blocks_l[0].transpose(1, 2)
            dq, dp = chunk_scores_backward(name, chunked(qr), chunked(pr), d_rb, caches["rb"])
            grads.add(query_r, dq.reshape(n, dim))
            grads.add(pos_r, dp.reshape(n, dim))
            if not symmetric:
                dq, dp = chunk_scores_backward(name, chunked(ql), chunked(pl), d_blocks_l[0], caches["lb"])
                grads.add(query_l, dq.reshape(n, dim))
                grads.add(pos_l, dp.reshape(n, dim))
            index_r = index_l = 1
        if rhs_neg.numel():
            u = nr.view(1, -1, dim) if t.all_negs else chunked(nr)
            dq, du = chunk_scores_backward(name, chunked(qr), u, d_blocks_r[index_r], caches["ru"])
            grads.add(query_r, dq.reshape(n, dim))
            grads.add(neg_r, du.reshape(-1, dim))
        if lhs_neg.numel():
            u = nl.view(1, -1, dim) if t.all_negs else chunked(nl)
            dq, du = chunk_scores_backward(name, chunked(ql), u, d_blocks_l[index_l], caches["lu"])
            grads.add(query_l, dq.reshape(n, dim))
            grads.add(neg_l, du.reshape(-1, dim))
        return loss_r + loss_l

    def _loss(self, pos: Tensor, pos_ids: Tensor, blocks: list[tuple[Tensor, Tensor]], correction: Tensor | None,
              weight: Tensor | None, n: int, chunk: int, own: tuple[Tensor, Tensor] | None = None
              ) -> tuple[Tensor, Tensor, list[Tensor], Tensor | None]:
        """Per-edge loss over the candidate blocks, with dL/dpos, dL/dblock (each block is
        overwritten by its gradient) and dL/d(own score).

        A candidate whose id is the row's positive id `pos_ids` is not a negative. With
        `correction` (training.sampling_correction) every sampled score, the positive's included, is
        first reduced by its entity's correction (a shift of each score: the gradients keep their
        form). `own`: (scores (n,), invalid (n,)) of each row's own query entity, one more negative
        of that row only (never corrected: it is a candidate with certainty, not by sampling).
        With all_negs the single block holds every entity: the row's positive is excluded by its
        column and no correction applies.
        """
        loss_fn = self.model.loss
        if self.training.all_negs:
            (scores, _), = blocks
            loss, d_pos, d_neg = loss_and_grad_excluding(loss_fn, pos, scores.view(n, -1), pos_ids)
            return self._weighted(loss, d_pos, [d_neg.view(scores.shape)], None, weight)
        if not isinstance(loss_fn, SoftmaxLoss):
            return self._weighted(*self._sampled_loss(pos, pos_ids, blocks, correction, n, chunk, own), weight)
        loss, d_pos, d_blocks, _ = self._sampled_loss(pos, pos_ids, blocks, correction, n, chunk, None)
        d_own = None
        if own is not None:
            # one more term in the softmax's sum: Z = Z0 + exp(own), with log Z0 = loss0 + pos
            # (the positive as corrected); every other gradient is scaled by Z0 / Z
            corrected = pos - correction[pos_ids] if correction is not None else pos
            own_scores, invalid = own
            shifted = own_scores.masked_fill(invalid, float("-inf")) - (loss + corrected)
            d_own = torch.sigmoid(shifted)
            keep = torch.sigmoid(-shifted)
            loss = loss + F.softplus(shifted)
            d_pos = (d_pos + 1.0) * keep - 1.0
            for d in d_blocks:
                d.view(n, -1).mul_(keep.unsqueeze(1))
        return self._weighted(loss, d_pos, d_blocks, d_own, weight)

    def _sampled_loss(self, pos: Tensor, pos_ids: Tensor, blocks: list[tuple[Tensor, Tensor]],
                      correction: Tensor | None, n: int, chunk: int, own: tuple[Tensor, Tensor] | None
                      ) -> tuple[Tensor, Tensor, list[Tensor], Tensor | None]:
        """_loss over sampled blocks, unweighted; `own` is a column of the negatives (not with softmax)."""
        loss_fn = self.model.loss
        if isinstance(loss_fn, SoftmaxLoss):
            fused = softmax_blocks_fused(pos, pos_ids, chunk, blocks, correction)
            if fused is not None:
                return (*fused, None)
        # torch ops: mask each row's own positive among its candidates, apply the correction
        chunks = n // chunk
        masked: list[tuple[Tensor, Tensor]] = []
        for scores, ids in blocks:
            if correction is not None:
                scores.sub_(correction[ids].unsqueeze(1))
            masked.append((scores, pos_ids.view(chunks, chunk, 1) == ids.unsqueeze(1)))
        if correction is not None:
            pos = pos - correction[pos_ids]
        if len(masked) > 1 and isinstance(loss_fn, SoftmaxLoss):
            owned: list[tuple[Tensor, Tensor | None]] = [(scores.reshape(n, -1), invalid.reshape(n, -1))
                                                        for scores, invalid in masked]
            loss, d_pos, d_flat = softmax_loss_and_grad_blocks(pos, owned)
            d_blocks = [d.view(scores.shape) for d, (scores, _) in zip(d_flat, masked, strict=True)]
            return loss, d_pos, d_blocks, None
        columns = [scores.reshape(n, -1) for scores, _ in masked]
        invalid_columns = [v.reshape(n, -1) for _, v in masked]
        if own is not None:
            columns.append(own[0].reshape(n, 1).clone())  # overwritten by its gradient
            invalid_columns.append(own[1].reshape(n, 1))
        sizes = [c.shape[1] for c in columns]
        negs = torch.cat(columns, dim=1) if len(columns) > 1 else columns[0]
        invalid = torch.cat(invalid_columns, dim=1)
        loss, d_pos, d_neg = loss_and_grad(loss_fn, pos, negs, invalid)
        parts = d_neg.split(sizes, dim=1)
        d_blocks = [d.reshape(scores.shape) for d, (scores, _) in zip(parts, masked, strict=False)]
        return loss, d_pos, d_blocks, parts[-1].reshape(n) if own is not None else None

    @staticmethod
    def _weighted(loss: Tensor, d_pos: Tensor, d_blocks: list[Tensor], d_own: Tensor | None,
                  weight: Tensor | None) -> tuple[Tensor, Tensor, list[Tensor], Tensor | None]:
        """Apply per-edge relation weights to a loss and its gradients (the blocks in place)."""
        if weight is None:
            return loss, d_pos, d_blocks, d_own
        per_row = weight.unsqueeze(1)
        return (loss * weight, d_pos * weight, [d.view(len(weight), -1).mul_(per_row).view(d.shape) for d in d_blocks],
                d_own * weight if d_own is not None else None)

    # ------------------------------------------------------------------ regularizers
    def _regularize(self, x: Tensor) -> Tensor:
        if self.regularizer == "l2":
            return x.pow(2).sum()
        if self.complex:
            half = x.shape[-1] // 2
            return (x[..., :half].pow(2) + x[..., half:].pow(2)).pow(1.5).sum()
        return x.abs().pow(3).sum()

    def _regularize_params(self, params: Params, rel_index: Tensor | None) -> Tensor:
        zero = torch.zeros((), device=self.device)
        if not params:
            return zero
        rows = {k: (v if rel_index is None else v[rel_index]) for k, v in params.items()}
        if self.regularizer == "l2":
            return sum((v.pow(2).sum() for v in rows.values()), zero)
        if "real" in rows and "imag" in rows:
            return (rows["real"].pow(2) + rows["imag"].pow(2)).pow(1.5).sum()
        return sum((v.abs().pow(3).sum() for k, v in rows.items() if k != "phase"), zero)
