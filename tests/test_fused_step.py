"""The fused compiled step of dot-product models (dot_step_f32 / dot_step_bf16) against a naive reference:
each chunk's loss with autograd on one leaf per occurrence (sampling corrections subtracted from the
scores), then row-wise Adagrad one occurrence at a time."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from shardgraph.config import load_config
from shardgraph.data.dataset import Dataset
from shardgraph.model.model import Model
from shardgraph.training.step import BatchStep, Table
from tests.conftest import require_kernels
from tests.test_scoring import ENTITIES, make_config, naive_loss, tiny_dataset  # noqa: F401 (a fixture)

DIM = 6
LR = 0.3


def naive_chunk(left: torch.Tensor, right: torch.Tensor, left_state: torch.Tensor, right_state: torch.Tensor,
                lhs: list[int], rhs: list[int], lneg: list[int], rneg: list[int], batch: bool, loss: str,
                margin: float, corrections: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """One chunk: loss of both directions, gradients per occurrence, Adagrad per occurrence (in place).
    `corrections` (lhs, rhs): each score of a direction, the positive's included, less its candidate's."""
    corr_l, corr_r = corrections if corrections is not None else (torch.zeros(ENTITIES), torch.zeros(ENTITIES))
    l_rows = [left[i].clone().requires_grad_() for i in lhs]
    r_rows = [right[i].clone().requires_grad_() for i in rhs]
    ln_rows = [left[i].clone().requires_grad_() for i in lneg]
    rn_rows = [right[i].clone().requires_grad_() for i in rneg]
    total = torch.zeros(())
    for i in range(len(lhs)):
        # predict rhs: query lhs_i, candidates the chunk's rhs (batch) and the rhs negatives
        batch_r = [(rhs[j], r_rows[j]) for j in range(len(rhs))] if batch else []
        cands = batch_r + list(zip(rneg, rn_rows, strict=True))
        neg = [torch.dot(l_rows[i], v) - corr_r[e] for e, v in cands if e != rhs[i]]
        total = total + naive_loss(loss, torch.dot(l_rows[i], r_rows[i]) - corr_r[rhs[i]], torch.stack(neg), margin)
        # predict lhs: query rhs_i, candidates the chunk's lhs and the lhs negatives
        batch_l = [(lhs[j], l_rows[j]) for j in range(len(lhs))] if batch else []
        cands = batch_l + list(zip(lneg, ln_rows, strict=True))
        neg = [torch.dot(v, r_rows[i]) - corr_l[e] for e, v in cands if e != lhs[i]]
        total = total + naive_loss(loss, torch.dot(l_rows[i], r_rows[i]) - corr_l[lhs[i]], torch.stack(neg), margin)
    total.backward()
    for table, state, ids, rows in ((left, left_state, lhs, l_rows), (right, right_state, rhs, r_rows),
                                    (left, left_state, lneg, ln_rows), (right, right_state, rneg, rn_rows)):
        for row, leaf in zip(ids, rows, strict=True):
            g = leaf.grad if leaf.grad is not None else torch.zeros(DIM)
            if not bool((g != 0).any()):
                continue
            state[row] += float((g * g).mean())
            table[row] -= LR / (math.sqrt(float(state[row])) + 1e-10) * g
    return total.item()


@pytest.mark.parametrize(("loss", "batch", "uniform", "two_tables", "scale"), [
    ("softmax", True, 4, False, 1.0), ("logistic", True, 4, False, 1.0), ("ranking", True, 4, False, 1.0),
    ("logistic", True, 0, False, 1.0), ("softmax", False, 3, False, 1.0), ("logistic", False, 3, True, 1.0),
    ("softmax", True, 2, True, 1.0),
    # scores hundreds apart: one shift of the whole chunk would underflow some rows' sums (softmax then
    # takes one row at a time); the logistic loss saturates
    ("softmax", True, 4, False, 15.0), ("logistic", True, 4, True, 15.0),
])
def test_fused_step_equals_naive(tiny_dataset: Path, loss: str, batch: bool, uniform: int,  # noqa: F811
                                 two_tables: bool, scale: float) -> None:
    check_against_naive(tiny_dataset, loss, batch, uniform, two_tables, scale)


@pytest.mark.parametrize(("loss", "batch", "uniform", "two_tables"), [
    ("softmax", True, 4, True), ("logistic", True, 3, False), ("ranking", False, 3, True)])
def test_fused_step_with_sampling_corrections_equals_naive(tiny_dataset: Path, loss: str, batch: bool,  # noqa: F811
                                                           uniform: int, two_tables: bool) -> None:
    check_against_naive(tiny_dataset, loss, batch, uniform, two_tables, 1.0, corrected=True)


@pytest.mark.parametrize(("loss", "corrected"), [("softmax", False), ("softmax", True), ("logistic", False)])
def test_fused_step_on_bfloat16_tables_equals_naive(tiny_dataset: Path, loss: str, corrected: bool) -> None:  # noqa: F811
    """bfloat16 tables: the reference runs in float32 from the same (rounded) values; the kernel's writes are
    rounded stochastically, so rows agree to a few bfloat16 steps (2^-8 relative), the loss and the float32
    Adagrad state closely."""
    check_against_naive(tiny_dataset, loss, True, 4, True, 1.0, corrected=corrected, bf16=True)


def check_against_naive(dataset: Path, loss: str, batch: bool, uniform: int, two_tables: bool, scale: float,
                        corrected: bool = False, bf16: bool = False) -> None:
    require_kernels()
    chunk = 3
    config = make_config("none", "dot", True, loss, num_batch_negs=chunk if batch else 0, num_uniform_negs=uniform,
                         lr=LR)
    config = config.replace(model=type(config.model)(**{**config.model.__dict__, "dimension": DIM}))
    model = Model(config, Dataset(dataset))
    step = BatchStep(model, config.training, {}, {})
    assert step.fused
    init = torch.Generator().manual_seed(5)
    dtype = torch.bfloat16 if bf16 else torch.float32
    left = Table((scale * torch.randn(ENTITIES, DIM, generator=init)).to(dtype), torch.rand(ENTITIES, generator=init),
                 ENTITIES)
    right = Table((scale * torch.randn(ENTITIES, DIM, generator=init)).to(dtype),
                  torch.rand(ENTITIES, generator=init), ENTITIES) if two_tables else left
    # log expected counts, as training.sampling_correction gives: a few units either side of 0
    corrections = (torch.randn(ENTITIES, generator=init) * 2, torch.randn(ENTITIES, generator=init) * 2) \
        if corrected else None
    # a repeated rhs (4) and lhs (3) within a chunk, a self-loop (9, 9), a last chunk of 2
    lhs = [0, 1, 3, 3, 9, 5, 2, 11]
    rhs = [4, 4, 7, 8, 9, 1, 10, 2]
    batch_ids = torch.tensor([[lhs[i], 0, rhs[i]] for i in range(len(lhs))])
    n = len(lhs)
    size = chunk if batch else n
    chunks = -(-n // size)
    draws = torch.Generator().manual_seed(11)
    lneg = torch.randint(ENTITIES, (chunks, uniform), generator=draws)
    rneg = torch.randint(ENTITIES, (chunks, uniform), generator=draws)
    if uniform:
        lneg[0, 0], rneg[0, 0] = lhs[0], rhs[0]  # a negative that is the positive: not a negative of that edge

    expected_left, expected_right = left.embeddings.float().clone(), right.embeddings.float().clone()
    expected_ls, expected_rs = left.state.clone(), right.state.clone()
    if not two_tables:
        expected_right, expected_rs = expected_left, expected_ls
    expected_loss = 0.0
    for c in range(chunks):
        rows = slice(c * size, min(n, (c + 1) * size))
        expected_loss += naive_chunk(expected_left, expected_right, expected_ls, expected_rs, lhs[rows], rhs[rows],
                                     lneg[c].tolist(), rneg[c].tolist(), batch, loss, config.model.margin,
                                     corrections)

    generator = torch.Generator().manual_seed(11)  # the step draws the same negatives: lhs side, then rhs
    original = step._negatives
    fixed = iter([lneg, rneg])
    step._negatives = lambda table, count, gen: (next(fixed), original(table, count, gen))[0]  # type: ignore
    got = step.train_batch(left, right, batch_ids[:, 0], batch_ids[:, 1], batch_ids[:, 2], generator, corrections)
    assert left.embeddings.dtype == dtype  # updated in place, in the storage dtype
    # bfloat16: a row's later chunks see its earlier updates rounded (a step is 2^-8 of the value)
    close = {"rtol": 3e-2, "atol": 3e-2} if bf16 else {"rtol": 1e-5, "atol": 1e-5}
    assert got == pytest.approx(expected_loss, rel=1e-2 if bf16 else 1e-5, abs=1e-5)
    torch.testing.assert_close(left.embeddings.float(), expected_left, **close)
    torch.testing.assert_close(left.state, expected_ls, rtol=5e-2 if bf16 else 1e-4, atol=1e-5)
    torch.testing.assert_close(right.embeddings.float(), expected_right, **close)
    torch.testing.assert_close(right.state, expected_rs, rtol=5e-2 if bf16 else 1e-4, atol=1e-5)


def test_fused_step_is_used_only_where_it_applies(tiny_dataset: Path) -> None:  # noqa: F811
    """Anything the kernel does not compute (an operator, another comparator, own negatives, a bias) keeps the
    torch step."""
    dataset = Dataset(tiny_dataset)

    def fused(operator: str = "none", comparator: str = "dot", **training: object) -> bool:
        config = make_config(operator, comparator, True, "softmax", **training)
        return BatchStep(Model(config, dataset), config.training, {}, {}).fused

    from shardgraph.utils.kernels import kernels
    assert fused() == (kernels() is not None)
    assert not fused("diagonal")
    assert not fused(comparator="cos")
    assert not fused(self_negatives=True)
    assert fused(sampling_correction=True) == (kernels() is not None)
    assert not fused(all_negs=True)
    assert not fused(fused_step=False)


# ----------------------------------------------------------------------------- worker threads


def test_dot_product_workers_are_threads_and_learn_as_processes_would(tmp_path: Path) -> None:
    """With the fused step, workers > 1 train in threads of the trainer (no worker process is started), and
    the embeddings classify the planted communities as well as a single worker's."""
    import threading

    import psutil

    from shardgraph.data.importer import import_edges
    from shardgraph.training.callbacks import Callback
    from shardgraph.training.trainer import train
    from shardgraph.walks.classify import evaluate_nodes
    from tests.test_walks import planted_communities

    require_kernels()
    edges, labels = planted_communities(tmp_path)
    import_edges([edges], tmp_path / "planted", progress=False)
    seen: dict[str, int] = {"threads": 0, "children": 0}
    before = {child.pid for child in psutil.Process().children(recursive=True)}  # left by earlier tests

    class Watch(Callback):  # after each bucket: the pool's threads are still there, idle
        def on_bucket_end(self, stats: object) -> None:
            names = [t.name for t in threading.enumerate()]
            seen["threads"] = max(seen["threads"], sum(n.startswith("shardgraph-worker") for n in names))
            children = {child.pid for child in psutil.Process().children(recursive=True)} - before
            seen["children"] = max(seen["children"], len(children))

    scores = {}
    for workers in (1, 2):
        config = load_config(Path(__file__).parent.parent / "configs" / "deepwalk.toml", [
            f"data.dataset={tmp_path / 'planted'}", "walks.walks_per_node=4", "walks.walk_length=20",
            "walks.window=4", "model.dimension=16", "training.epochs=3", f"training.workers={workers}",
            "training.batch_size=500", "training.edge_chunk_size=4000"])
        run = train(config, run_dir=tmp_path / f"run{workers}", progress=False, callbacks=[Watch()])
        scores[workers] = evaluate_nodes(run.path, labels, train_fractions=[0.5], repeats=3)["results"][0]["micro_f1"]
    assert seen["threads"] == 2 and seen["children"] == 0
    assert scores[2] > 0.8 and abs(scores[2] - scores[1]) < 0.1, scores


def test_a_failing_worker_thread_stops_the_others_and_names_the_error(tiny_dataset: Path,  # noqa: F811
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread raising: run() raises TrainingError with its error, after the other thread, which would train
    for ever, stopped at its next batch."""
    import time

    from shardgraph.errors import TrainingError
    from shardgraph.storage.buffer import SharedTables
    from shardgraph.training import worker
    from shardgraph.training.worker import BucketTask, ThreadPool

    def fake_train_task(context: object, task: BucketTask, report: object) -> worker.TaskResult:
        if task.rank == 1:
            time.sleep(0.2)
            raise ValueError("disk on fire")
        done = 0
        while True:  # stopped only by the pool
            done += 1
            report(done)  # type: ignore[operator]
            time.sleep(0.01)

    config = make_config("none", "dot", True, "softmax")
    monkeypatch.setattr(worker, "TrainingContext", lambda *args, **kwargs: object())
    monkeypatch.setattr(worker, "train_task", fake_train_task)
    pool = ThreadPool(2, config, Dataset(tiny_dataset), SharedTables.__new__(SharedTables))
    tasks = [BucketTask(0, 0, 0, "", 10, {}, 0, rank=r, shares=2) for r in range(2)]
    started = time.perf_counter()
    with pytest.raises(TrainingError, match="disk on fire"):
        pool.run(tasks)
    assert time.perf_counter() - started < 5
    pool.close()
