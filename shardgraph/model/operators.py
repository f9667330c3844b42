"""Relation operators: op_r(θ) transforms an embedding by the parameters of relation r.

Every operator keeps its parameters as a dict of tables whose first dimension is the
relation id, so one operator instance serves many relations (dynamic relations) or one
(per-relation operators). `apply` takes the parameter rows already gathered for a batch
(`params[name]` is (U, ...), U relations) and `rel`, a (B,) index into those U rows, or
None when every row of `x` uses row 0.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from shardgraph.registry import Registry

Params = dict[str, Tensor]
OPERATORS: Registry[type[Operator]] = Registry("operator")


class Operator(ABC):
    """Transforms (B, D) embeddings with per-relation parameters."""

    name = ""
    complex_valued = False

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of each parameter of one relation."""
        return {}

    def init_params(self, num_relations: int) -> Params:
        """Fresh parameter tables (num_relations, ...): the identity transform."""
        return {}

    @abstractmethod
    def apply(self, x: Tensor, params: Params, rel: Tensor | None) -> Tensor:
        """op(x): x is (B, D); params[name] is (U, ...); rel is (B,) into U, or None (row 0 for all)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


def _rows(table: Tensor, rel: Tensor | None) -> Tensor:
    """Per-row parameters: table[rel] (B, ...) or table[0] broadcast."""
    return table[0] if rel is None else table[rel]


@OPERATORS.register("none")
class IdentityOperator(Operator):
    name = "none"

    def apply(self, x: Tensor, params: Params, rel: Tensor | None) -> Tensor:
        return x


@OPERATORS.register("translation")
class TranslationOperator(Operator):
    """op(x) = x + t_r (TransE)."""

    name = "translation"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"translation": (self.dim,)}

    def init_params(self, num_relations: int) -> Params:
        return {"translation": torch.zeros(num_relations, self.dim)}

    def apply(self, x: Tensor, params: Params, rel: Tensor | None) -> Tensor:
        return x + _rows(params["translation"], rel)


@OPERATORS.register("diagonal")
class DiagonalOperator(Operator):
    """op(x) = x ⊙ d_r (DistMult)."""

    name = "diagonal"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"diagonal": (self.dim,)}

    def init_params(self, num_relations: int) -> Params:
        return {"diagonal": torch.ones(num_relations, self.dim)}

    def apply(self, x: Tensor, params: Params, rel: Tensor | None) -> Tensor:
        return x * _rows(params["diagonal"], rel)


def _grouped_matmul(x: Tensor, matrices: Tensor, rel: Tensor | None) -> Tensor:
    """x[i] @ matrices[rel[i]].T for every row: one matmul per distinct relation of the batch."""
    if rel is None or matrices.shape[0] == 1:
        return x @ matrices[0].t()
    rows, values = [], []
    for r in torch.unique(rel).tolist():
        index = torch.nonzero(rel == r).squeeze(1)
        rows.append(index)
        values.append(x[index] @ matrices[r].t())
    order = torch.cat(rows)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.shape[0], device=order.device)
    return torch.cat(values)[inverse]


@OPERATORS.register("linear")
class LinearOperator(Operator):
    """op(x) = A_r x (RESCAL-like)."""

    name = "linear"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"linear": (self.dim, self.dim)}

    def init_params(self, num_relations: int) -> Params:
        return {"linear": torch.eye(self.dim).repeat(num_relations, 1, 1)}

    def apply(self, x: Tensor, params: Params, rel: Tensor | None) -> Tensor:
        return _grouped_matmul(x, params["linear"], rel)


@OPERATORS.register("affine")
class AffineOperator(Operator):
    """op(x) = A_r x + b_r."""

    name = "affine"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"linear": (self.dim, self.dim), "translation": (self.dim,)}

    def init_params(self, num_relations: int) -> Params:
        return {"linear": torch.eye(self.dim).repeat(num_relations, 1, 1),
                "translation": torch.zeros(num_relations, self.dim)}

    def apply(self, x: Tensor, params: Params, rel: Tensor | None) -> Tensor:
        return _grouped_matmul(x, params["linear"], rel) + _rows(params["translation"], rel)


def _complex_mul(x: Tensor, re: Tensor, im: Tensor) -> Tensor:
    """x as [real | imaginary] halves, times (re + i·im)."""
    half = x.shape[-1] // 2
    x_re, x_im = x[..., :half], x[..., half:]
    return torch.cat([x_re * re - x_im * im, x_re * im + x_im * re], dim=-1)


@OPERATORS.register("complex_diagonal")
class ComplexDiagonalOperator(Operator):
    """op(x) = x ⊙ w_r in complex arithmetic, x = [real | imaginary] halves (ComplEx)."""

    name = "complex_diagonal"
    complex_valued = True

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"real": (self.dim // 2,), "imag": (self.dim // 2,)}

    def init_params(self, num_relations: int) -> Params:
        return {"real": torch.ones(num_relations, self.dim // 2), "imag": torch.zeros(num_relations, self.dim // 2)}

    def apply(self, x: Tensor, params: Params, rel: Tensor | None) -> Tensor:
        return _complex_mul(x, _rows(params["real"], rel), _rows(params["imag"], rel))


@OPERATORS.register("rotate")
class RotateOperator(Operator):
    """op(x) = x ⊙ e^{iφ_r}: a rotation of each complex coordinate (RotatE)."""

    name = "rotate"
    complex_valued = True

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"phase": (self.dim // 2,)}

    def init_params(self, num_relations: int) -> Params:
        return {"phase": torch.zeros(num_relations, self.dim // 2)}

    def apply(self, x: Tensor, params: Params, rel: Tensor | None) -> Tensor:
        phase = _rows(params["phase"], rel)
        return _complex_mul(x, torch.cos(phase), torch.sin(phase))


def make_operator(name: str, dim: int) -> Operator:
    return OPERATORS.get(name)(dim)


def random_params(operator: Operator, num_relations: int, generator: torch.Generator) -> Params:
    """Non-trivial parameters for tests: identity plus noise."""
    out = {}
    for name, table in operator.init_params(num_relations).items():
        noise = torch.randn(table.shape, generator=generator) / math.sqrt(max(1, operator.dim))
        out[name] = table + noise
    return out
