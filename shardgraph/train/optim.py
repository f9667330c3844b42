"""Adagrad, applied in place to the rows a batch touched (lock-free: HOGWILD workers share the tables).

Embeddings use row-wise Adagrad (one accumulator per row: the mean of the squared
gradient over the row), as PyTorch-BigGraph does; relation parameters and global biases
use element-wise Adagrad.
"""

from __future__ import annotations

from torch import Tensor

EPS = 1e-10


def _write_rows(table: Tensor, rows: Tensor, step: Tensor) -> None:
    """table[rows] += step, in the table's own dtype (math in float32)."""
    if table.dtype == step.dtype:
        table.index_add_(0, rows, step)
    else:
        table.index_copy_(0, rows, (table.index_select(0, rows).to(step.dtype) + step).to(table.dtype))


def rowwise_adagrad_(table: Tensor, state: Tensor, index: Tensor, grad: Tensor, lr: float) -> None:
    """Row-wise Adagrad on table[index] with gradient `grad` (len(index), D); state is (rows,).

    A row that occurs several times in `index` is updated once per occurrence, as if the
    occurrences came in consecutive steps (no sort to merge them: it would cost more than
    the rest of the update). Rows with a zero gradient are left unchanged.
    """
    state.index_add_(0, index, (grad * grad).mean(1))
    scale = state.index_select(0, index).sqrt_().add_(EPS).reciprocal_().mul_(-lr)
    _write_rows(table, index, grad.mul_(scale.unsqueeze(1)))


def adagrad_(table: Tensor, state: Tensor, index: Tensor, grad: Tensor, lr: float) -> None:
    """Element-wise Adagrad on table[index] (index holds distinct rows); state has table's shape."""
    state.index_add_(0, index, grad.pow(2))
    _write_rows(table, index, grad / state.index_select(0, index).sqrt().add_(EPS) * -lr)


def dense_adagrad_(param: Tensor, state: Tensor, grad: Tensor, lr: float) -> None:
    """Element-wise Adagrad on a whole (small) tensor, such as a global bias vector."""
    state.add_(grad.pow(2))
    param.add_(grad / state.sqrt().add_(EPS) * -lr)
