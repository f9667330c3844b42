"""Losses over a positive score and its negatives' scores, per edge.

Every loss takes pos (B,), neg (B, N) and a boolean `valid` (B, N) mask (False where a
candidate is the positive itself, or padding) and returns the per-edge loss (B,).
"""

from __future__ import annotations

import ctypes
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from shardgraph.registry import Registry
from shardgraph.utils.kernels import kernels

LOSSES: Registry[type[Loss]] = Registry("loss")


class Loss(ABC):
    name = ""

    def __init__(self, margin: float = 0.1) -> None:
        self.margin = margin

    @abstractmethod
    def __call__(self, pos: Tensor, neg: Tensor, valid: Tensor | None) -> Tensor:
        """(B,), (B, N), (B, N) bool or None -> (B,) loss of each edge."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@LOSSES.register("ranking")
class RankingLoss(Loss):
    """Σ_negatives max(0, margin - pos + neg)."""

    name = "ranking"

    def __call__(self, pos: Tensor, neg: Tensor, valid: Tensor | None) -> Tensor:
        hinge = F.relu(self.margin - pos.unsqueeze(1) + neg)
        if valid is not None:
            hinge = hinge * valid
        return hinge.sum(1)


@LOSSES.register("logistic")
class LogisticLoss(Loss):
    """-log σ(pos) - mean_negatives log(1 - σ(neg))."""

    name = "logistic"

    def __call__(self, pos: Tensor, neg: Tensor, valid: Tensor | None) -> Tensor:
        neg_loss = F.softplus(neg)
        if valid is None:
            mean_neg = neg_loss.mean(1)
        else:
            mean_neg = (neg_loss * valid).sum(1) / valid.sum(1).clamp_min(1)
        return F.softplus(-pos) + mean_neg


@LOSSES.register("softmax")
class SoftmaxLoss(Loss):
    """Cross-entropy of the positive among {positive} ∪ negatives: logsumexp(pos, neg) - pos."""

    name = "softmax"

    def __call__(self, pos: Tensor, neg: Tensor, valid: Tensor | None) -> Tensor:
        if valid is not None:
            neg = neg.masked_fill(~valid, float("-inf"))
        scores = torch.cat([pos.unsqueeze(1), neg], dim=1)
        return torch.logsumexp(scores, dim=1) - pos


def make_loss(name: str, margin: float) -> Loss:
    return LOSSES.get(name)(margin)


def loss_and_grad(loss: Loss, pos: Tensor, neg: Tensor, invalid: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(per-edge loss (B,), dL/dpos (B,), dL/dneg (B, N)) without autograd, for the training step.

    `invalid` (B, N) marks candidates that are not negatives of their row (the positive itself).
    `neg` is overwritten (it becomes the returned gradient): the caller no longer needs the scores.
    """
    if isinstance(loss, SoftmaxLoss):
        if invalid is not None:
            neg.masked_fill_(invalid, float("-inf"))
        top = torch.maximum(neg.amax(1), pos)
        exp_pos = torch.exp(pos - top)
        exp_neg = neg.sub_(top.unsqueeze(1)).exp_()
        total = exp_pos + exp_neg.sum(1)
        value = torch.log(total) + top - pos
        inv = total.reciprocal()
        return value, exp_pos * inv - 1.0, exp_neg.mul_(inv.unsqueeze(1))
    if isinstance(loss, LogisticLoss):
        if invalid is None:
            weight: Tensor | float = 1.0 / neg.shape[1]
        else:
            valid = ~invalid
            weight = valid / valid.sum(1, keepdim=True).clamp_min(1).to(pos.dtype)
        value = F.softplus(-pos) + (F.softplus(neg) * weight).sum(1)
        return value, -torch.sigmoid(-pos), neg.sigmoid_().mul_(weight)
    if isinstance(loss, RankingLoss):
        margins = neg.add_((loss.margin - pos).unsqueeze(1))
        if invalid is not None:
            margins.masked_fill_(invalid, 0.0)
        margins.clamp_min_(0.0)
        value = margins.sum(1)
        grad_neg = (margins > 0).to(pos.dtype)
        return value, -grad_neg.sum(1), grad_neg
    raise TypeError(f"no hand-written gradient for {type(loss).__name__}")


def loss_and_grad_excluding(loss: Loss, pos: Tensor, neg: Tensor, exclude: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """loss_and_grad where each row's negatives are all columns but one (`exclude` (B,)), for
    scoring against every entity: no (B, N) mask is built, and `neg` is overwritten with its
    gradient (it is large; the caller no longer needs the scores)."""
    column = exclude.unsqueeze(1)
    if isinstance(loss, SoftmaxLoss):
        top = torch.maximum(neg.amax(1), pos)
        exp_neg = neg.sub_(top.unsqueeze(1)).exp_()
        exp_pos = torch.exp(pos - top)
        total = exp_neg.sum(1) - exp_neg.gather(1, column).squeeze(1) + exp_pos
        value = torch.log(total) + top - pos
        inv = total.reciprocal()
        grad_neg = exp_neg.mul_(inv.unsqueeze(1)).scatter_(1, column, 0.0)
        return value, exp_pos * inv - 1.0, grad_neg
    count = max(1, neg.shape[1] - 1)
    if isinstance(loss, LogisticLoss):
        softplus = F.softplus(neg)
        neg_loss = (softplus.sum(1) - softplus.gather(1, column).squeeze(1)) / count
        del softplus
        grad_neg = neg.sigmoid_().div_(count).scatter_(1, column, 0.0)
        return F.softplus(-pos) + neg_loss, -torch.sigmoid(-pos), grad_neg
    if isinstance(loss, RankingLoss):
        margins = neg.add_((loss.margin - pos).unsqueeze(1)).scatter_(1, column, 0.0).clamp_min_(0.0)
        value = margins.sum(1)
        grad_neg = (margins > 0).to(pos.dtype)
        return value, -grad_neg.sum(1), grad_neg
    raise TypeError(f"no hand-written gradient for {type(loss).__name__}")


def softmax_loss_and_grad_blocks(pos: Tensor, blocks: list[tuple[Tensor, Tensor | None]]) -> tuple[
        Tensor, Tensor, list[Tensor]]:
    """The softmax loss over negatives given as several (B, N_i) blocks, without concatenating
    them: loss (B,), dL/dpos (B,), and dL/dblock for each block (each block is overwritten)."""
    top = pos.clone()
    for scores, invalid in blocks:
        if invalid is not None:
            scores.masked_fill_(invalid, float("-inf"))
        torch.maximum(top, scores.amax(1), out=top)
    exp_pos = torch.exp(pos - top)
    total = exp_pos.clone()
    for scores, _ in blocks:
        total += scores.sub_(top.unsqueeze(1)).exp_().sum(1)
    value = torch.log(total) + top - pos
    inv = total.reciprocal()
    grads = [scores.mul_(inv.unsqueeze(1)) for scores, _ in blocks]
    return value, exp_pos * inv - 1.0, grads


def softmax_blocks_fused(pos: Tensor, pos_ids: Tensor, chunk: int, blocks: list[tuple[Tensor, Tensor]],
                         correction: Tensor | None) -> tuple[Tensor, Tensor, list[Tensor]] | None:
    """The softmax loss over sampled candidate blocks in one compiled pass per row.

    `blocks` are (scores (chunks, chunk, W), candidate ids (chunks, W)): a chunk of rows shares
    its candidates; a candidate whose id is the row's positive id `pos_ids` is not a negative; with
    `correction` (one float per entity) every score, the positive's included, is first reduced by
    the correction of its entity. Returns (loss (n,), dL/dpos (n,), dL/dscores per block, written
    over the scores), or None where the kernel cannot run (not built, not float32 on the CPU), for
    the caller to use torch ops.
    """
    library = kernels()
    floats = [pos, *(scores for scores, _ in blocks), *([correction] if correction is not None else [])]
    if library is None or any(t.device.type != "cpu" or t.dtype != torch.float32 for t in floats):
        return None
    if pos_ids.dtype != torch.int64 or any(ids.dtype != torch.int64 for _, ids in blocks):
        return None
    n = pos.shape[0]
    pos, pos_ids = pos.contiguous(), pos_ids.contiguous()  # held: the kernel reads their memory
    correction = correction.contiguous() if correction is not None else None
    scores = [s.contiguous() for s, _ in blocks]  # the same tensors when already contiguous
    ids = [i.contiguous() for _, i in blocks]
    widths = torch.tensor([s.shape[-1] for s in scores], dtype=torch.int64)
    scratch = torch.empty(int(widths.sum()))
    loss, d_pos = torch.empty(n), torch.empty(n)
    pointers = ctypes.c_void_p * len(blocks)
    library.softmax_blocks_f32(n, chunk, pos.data_ptr(), pos_ids.data_ptr(),
                               correction.data_ptr() if correction is not None else None,
                               len(blocks), pointers(*[s.data_ptr() for s in scores]),
                               pointers(*[i.data_ptr() for i in ids]), widths.data_ptr(), scratch.data_ptr(),
                               loss.data_ptr(), d_pos.data_ptr())
    return loss, d_pos, scores
