"""Adagrad, applied in place to the rows a batch touched (lock-free: HOGWILD workers share the tables).

Embeddings use row-wise Adagrad (one accumulator per row: the mean of the squared
gradient over the row), as PyTorch-BigGraph does; relation parameters and global biases
use element-wise Adagrad.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shardgraph.utils.kernels import kernels as _kernels

EPS = 1e-10


def _write_rows(table: Tensor, rows: Tensor, step: Tensor) -> None:
    """table[rows] += step, in the table's own dtype (math in float32).

    A half-precision table is read, updated in float32 and written back once per distinct row
    (the steps of a repeated row are summed first), rounding stochastically so that updates
    smaller than the format's resolution still move the embedding on average.
    """
    if table.dtype == step.dtype:
        table.index_add_(0, rows, step)
        return
    distinct, inverse = torch.unique(rows, return_inverse=True)
    summed = torch.zeros((distinct.shape[0], *step.shape[1:]), dtype=step.dtype, device=step.device)
    summed.index_add_(0, inverse, step)
    updated = table.index_select(0, distinct).to(step.dtype).add_(summed)
    table.index_copy_(0, distinct, stochastic_round(updated, table.dtype))


def stochastic_round(x: Tensor, dtype: torch.dtype) -> Tensor:
    """float32 -> float16/bfloat16, rounding up or down with probability proportional to proximity."""
    if dtype == torch.bfloat16:
        # bfloat16 keeps the top 16 bits of a float32: add uniform noise to the 16 dropped bits, truncate
        bits = x.contiguous().view(torch.int32)
        noise = torch.randint_like(bits, 0, 1 << 16)
        return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)
    lower = x.to(dtype)
    low32 = lower.to(torch.float32)
    # the representable neighbour on the other side of x
    other = torch.where(low32 > x, torch.nextafter(lower, torch.full_like(lower, float("-inf"))),
                        torch.nextafter(lower, torch.full_like(lower, float("inf"))))
    other32 = other.to(torch.float32)
    gap = (other32 - low32).abs()
    probability = torch.where(gap > 0, (x - low32).abs() / gap, torch.zeros_like(x))
    return torch.where(torch.rand_like(x) < probability, other, lower)


def rowwise_adagrad_(table: Tensor, state: Tensor, index: Tensor, grad: Tensor, lr: float) -> None:
    """Row-wise Adagrad on table[index] with gradient `grad` (len(index), D); state is (rows,).

    Semantics (both paths): the occurrences of `index` are applied one after the other, as
    consecutive steps. Occurrence i adds mean(grad[i]²) to state[row] first, then moves the row
    by -lr · grad[i] / (sqrt(state[row]) + eps), so a row met k times is stepped k times, each
    with the state that includes the occurrences before it and itself. (Merging them would need
    a sort, which costs more than the update; PyTorch-BigGraph's merged update learns the same
    quality.) Rows with a zero gradient are left unchanged. `grad` may be overwritten.

    float32 and bfloat16 tables on the CPU take one pass of a compiled loop (no temporaries: this runs for
    every batch, and as torch ops cost as much as the loss); other dtypes and devices, or an
    install without the compiled kernels, use torch ops that compute the same steps (the sum of a
    repeated row's steps is added at once, so results agree to float rounding).
    """
    kernels = _kernels()
    if (kernels is not None and table.device.type == "cpu" and table.dtype in (torch.float32, torch.bfloat16)
            and grad.dtype == torch.float32 and state.dtype == torch.float32 and index.dtype == torch.int64
            and table.stride(1) == 1 and state.is_contiguous() and len(index) == len(grad)):
        grad = grad.contiguous()
        args = (table.data_ptr(), table.stride(0), state.data_ptr(), index.data_ptr(), index.stride(0),
                grad.data_ptr(), len(index), grad.shape[1], float(lr))
        if table.dtype == torch.float32:
            kernels.rowwise_adagrad_f32(*args)
        else:  # stochastic rounding, seeded from torch's generator (reproducible with the seed)
            kernels.rowwise_adagrad_bf16(*args, int(torch.randint(1 << 62, (1,)).item()))
        return
    squares = (grad * grad).mean(1)
    scale = -lr / (state.index_select(0, index) + _squares_so_far(index, squares)).sqrt_().add_(EPS)
    state.index_add_(0, index, squares)
    _write_rows(table, index, grad.mul_(scale.unsqueeze(1)))


def _squares_so_far(index: Tensor, squares: Tensor) -> Tensor:
    """(n,) for each occurrence i: the sum of squares[j] over occurrences j <= i of the same row."""
    order = torch.argsort(index, stable=True)
    rows = index[order]
    running = torch.cumsum(squares[order].double(), 0)
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    starts = first.nonzero().squeeze(1)
    before_group = running[starts] - squares[order][starts].double()
    group = torch.cumsum(first.long(), 0) - 1
    out = torch.empty_like(squares)
    out[order] = (running - before_group[group]).to(squares.dtype)
    return out


def adagrad_(table: Tensor, state: Tensor, index: Tensor, grad: Tensor, lr: float) -> None:
    """Element-wise Adagrad on table[index] (index holds distinct rows); state has table's shape."""
    state.index_add_(0, index, grad.pow(2))
    _write_rows(table, index, grad / state.index_select(0, index).sqrt().add_(EPS) * -lr)


def dense_adagrad_(param: Tensor, state: Tensor, grad: Tensor, lr: float) -> None:
    """Element-wise Adagrad on a whole (small) tensor, such as a global bias vector."""
    state.add_(grad.pow(2))
    param.add_(grad / state.sqrt().add_(EPS) * -lr)
