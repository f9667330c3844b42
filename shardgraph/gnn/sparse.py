"""A CSR matrix for sparse @ dense products whose backward pass reuses a cached transpose.

torch's own backward of `csr @ dense` transposes the CSR (a sort of all non-zeros) on every
call; features and adjacency matrices keep their structure across epochs, so the transposed
structure is computed once and only the values are permuted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


@dataclass
class SparseMatrix:
    """(rows, cols) CSR: crow (rows+1,) int64, col (nnz,) int64, values (nnz,) float32."""

    crow: Tensor
    col: Tensor
    values: Tensor
    shape: tuple[int, int]
    # structure-derived results (transpose, row prefixes), shared by every copy with other values
    _cache: dict[Any, Any] = field(default_factory=dict)

    @classmethod
    def from_numpy(cls, crow: np.ndarray, col: np.ndarray, values: np.ndarray, shape: tuple[int, int]
                   ) -> SparseMatrix:
        return cls(torch.from_numpy(np.ascontiguousarray(crow, dtype=np.int64)),
                   torch.from_numpy(np.ascontiguousarray(col, dtype=np.int64)),
                   torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)), shape)

    def transpose_structure(self) -> tuple[Tensor, Tensor, Tensor]:
        """(crow (cols+1,), col (nnz,), perm (nnz,)) of the transpose; its values are values[perm]."""
        if "transpose" not in self._cache:
            crow, col = self.crow.numpy(), self.col.numpy()
            rows = np.repeat(np.arange(len(crow) - 1, dtype=np.int64), np.diff(crow))
            perm = np.argsort(col, kind="stable")
            t_crow = np.concatenate([[0], np.cumsum(np.bincount(col, minlength=self.shape[1]))]).astype(np.int64)
            self._cache["transpose"] = (torch.from_numpy(t_crow), torch.from_numpy(rows[perm]),
                                        torch.from_numpy(perm))
        transpose: tuple[Tensor, Tensor, Tensor] = self._cache["transpose"]
        return transpose

    def with_values(self, values: Tensor) -> SparseMatrix:
        """The same structure (and cached transpose) with other values (e.g. after dropout)."""
        return SparseMatrix(self.crow, self.col, values, self.shape, self._cache)

    def first_rows(self, n: int) -> SparseMatrix:
        """The first n rows (a view; its structure cached with this one's)."""
        if n == self.shape[0]:
            return self
        end = int(self.crow[n])
        key = ("first_rows", n)
        if key not in self._cache:
            self._cache[key] = SparseMatrix(self.crow[: n + 1], self.col[:end], self.values[:end], (n, self.shape[1]))
        prefix: SparseMatrix = self._cache[key]
        return prefix.with_values(self.values[:end])

    def torch(self) -> Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, self.values, size=self.shape, check_invariants=False)


class _SparseMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, dense: Tensor, matrix: SparseMatrix) -> Tensor:
        ctx.matrix = matrix
        return matrix.torch() @ dense

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        matrix: SparseMatrix = ctx.matrix
        if not ctx.needs_input_grad[0]:
            return None, None
        t_crow, t_col, perm = matrix.transpose_structure()
        transposed = torch.sparse_csr_tensor(t_crow, t_col, matrix.values[perm], check_invariants=False,
                                             size=(matrix.shape[1], matrix.shape[0]))
        return transposed @ grad, None


def sparse_mm(matrix: SparseMatrix, dense: Tensor) -> Tensor:
    """matrix (r, c) @ dense (c, k) -> (r, k), differentiable in `dense` (values are constants)."""
    if not dense.requires_grad:
        return matrix.torch() @ dense
    result: Tensor = _SparseMatmul.apply(dense, matrix)
    return result
