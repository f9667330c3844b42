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
