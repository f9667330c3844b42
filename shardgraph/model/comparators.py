"""Comparators: the similarity of two embeddings. Larger is more similar, so distances are negated.

`pairs` scores aligned rows (positives); `all_pairs` scores every row of a chunk against
every candidate of the same chunk with one batched matrix product (negatives).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from shardgraph.registry import Registry

COMPARATORS: Registry[type[Comparator]] = Registry("comparator")


class Comparator(ABC):
    name = ""

    def prepare(self, x: Tensor) -> Tensor:
        """Map embeddings into the space where the comparison is a (negated) distance or a dot product."""
        return x

    @abstractmethod
    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        """(..., D) x (..., D) -> (...): score of aligned rows."""

    @abstractmethod
    def all_pairs(self, a: Tensor, b: Tensor) -> Tensor:
        """(C, M, D) x (C, N, D) -> (C, M, N): every row of a chunk against every candidate of the chunk."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@COMPARATORS.register("dot")
class DotComparator(Comparator):
    name = "dot"

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum(-1)

    def all_pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.bmm(a, b.transpose(1, 2))


@COMPARATORS.register("cos")
class CosComparator(DotComparator):
    name = "cos"

    def prepare(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2, dim=-1)


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """(C, M, D), (C, N, D) -> (C, M, N) squared euclidean distances via |a|² + |b|² - 2ab."""
    a_norm = (a * a).sum(-1, keepdim=True)
    b_norm = (b * b).sum(-1).unsqueeze(1)
    return torch.baddbmm(a_norm + b_norm, a, b.transpose(1, 2), alpha=-2).clamp_min(0)


@COMPARATORS.register("l2")
class L2Comparator(Comparator):
    name = "l2"

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return -((a - b).pow(2).sum(-1).clamp_min(1e-30).sqrt())

    def all_pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return -(_squared_distances(a, b).clamp_min(1e-30).sqrt())


@COMPARATORS.register("squared_l2")
class SquaredL2Comparator(Comparator):
    name = "squared_l2"

    def pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return -((a - b).pow(2).sum(-1))

    def all_pairs(self, a: Tensor, b: Tensor) -> Tensor:
        return -_squared_distances(a, b)


def make_comparator(name: str) -> Comparator:
    return COMPARATORS.get(name)()


# ----------------------------------------------------------------------------- hand-written gradients
# The training step scores a chunk's candidates and takes gradients by hand for the
# comparator and the loss (the part that dominates the cost); autograd handles the cheap
# rest (operators, normalisation, regularisers). tests/test_scoring.py checks these
# against autograd.


def chunk_scores(name: str, q: Tensor, c: Tensor) -> tuple[Tensor, Tensor | None]:
    """Scores (C, M, N) of queries q (C, M, D) against candidates c (C, N, D), and what the
    backward pass needs (the clamped squared distances for l2)."""
    if name in ("dot", "cos"):
        return torch.bmm(q, c.transpose(1, 2)), None
    d2 = _squared_distances(q, c)
    if name == "squared_l2":
        return -d2, None
    dist = d2.clamp_min(1e-30).sqrt_()
    return -dist, dist


def chunk_scores_backward(name: str, q: Tensor, c: Tensor, grad: Tensor,
                          cache: Tensor | None) -> tuple[Tensor, Tensor]:
    """(dL/dq (C, M, D), dL/dc (C, N, D)) from dL/dscores (C, M, N)."""
    if name in ("dot", "cos"):
        return torch.bmm(grad, c), torch.bmm(grad.transpose(1, 2), q)
    if name == "l2":
        assert cache is not None
        grad = grad / cache  # d(-sqrt(d2)) = -d(d2) / (2 sqrt(d2)); the 2 cancels below
        sign = 1.0
    else:
        sign = 2.0
    # scores = -d2 (scaled): dq = -sign (q Σ_j g_j - Σ_j g_j c_j), dc = sign (Σ_i g_i q_i - c Σ_i g_i)
    dq = torch.baddbmm(q * grad.sum(2, keepdim=True), grad, c, alpha=-1).mul_(-sign)
    dc = torch.baddbmm(c * grad.sum(1).unsqueeze(2), grad.transpose(1, 2), q, alpha=-1).mul_(-sign)
    return dq, dc


def pair_scores(name: str, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor | None]:
    """Scores (...,) of aligned rows, and the backward cache."""
    if name in ("dot", "cos"):
        return (q * p).sum(-1), None
    diff = q - p
    d2 = (diff * diff).sum(-1)
    if name == "squared_l2":
        return -d2, diff
    dist = d2.clamp_min(1e-30).sqrt_()
    return -dist, torch.cat([diff, dist.unsqueeze(-1)], -1)


def pair_scores_backward(name: str, q: Tensor, p: Tensor, grad: Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor]:
    """(dL/dq, dL/dp) from dL/dscores (...,)."""
    g = grad.unsqueeze(-1)
    if name in ("dot", "cos"):
        return g * p, g * q
    assert cache is not None
    if name == "squared_l2":
        dq = cache * (-2.0 * g)
    else:
        diff, dist = cache[..., :-1], cache[..., -1:]
        dq = diff * (-g / dist)
    return dq, -dq
