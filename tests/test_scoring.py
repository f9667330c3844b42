"""The batched scorer and the hand-written gradients against naive per-edge references."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from shardgraph.config import COMPARATOR_NAMES, LOSS_NAMES, OPERATOR_NAMES, Config, load_config
from shardgraph.data.dataset import Dataset
from shardgraph.data.importer import import_edges
from shardgraph.model.comparators import COMPARATORS
from shardgraph.model.losses import LOSSES, loss_and_grad, make_loss
from shardgraph.model.model import Model
from shardgraph.model.operators import OPERATORS, random_params
from shardgraph.training.step import BatchStep, Table
from tests.conftest import require_kernels, write_lines

DIM = 6
ENTITIES = 12


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    lines = [f"e{i}\tr{i % 3}\te{(i * 5 + 1) % ENTITIES}" for i in range(ENTITIES * 2)]
    edges = write_lines(root / "g.tsv", lines)
    import_edges([edges], root / "ds", progress=False)
    return root / "ds"


def make_config(operator: str, comparator: str, dynamic: bool, loss: str = "softmax", **training: object) -> Config:
    overrides = [f"model.dimension={DIM}", f"model.comparator={comparator}", f"model.loss={loss}",
                 "model.margin=0.3", f"model.dynamic_relations={'true' if dynamic else 'false'}"]
    if dynamic:
        overrides.append(f"model.operator={operator}")
    else:
        overrides.append("relations=[" + ", ".join(
            f'{{name="r{r}", operator="{operator}", weight={1.0 + 0.5 * r}}}' for r in range(3)) + "]")
    overrides += [f"training.{k}={v if not isinstance(v, bool) else str(v).lower()}" for k, v in training.items()]
    return load_config(None, overrides)


# ----------------------------------------------------------------------------- naive references


def naive_operator(name: str, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """op(x) for one vector x (D,) with one relation's parameters, written from the definitions."""
    if name == "none":
        return x
    if name == "translation":
        return x + params["translation"]
    if name == "diagonal":
        return x * params["diagonal"]
    if name == "linear":
        return params["linear"] @ x
    if name == "affine":
        return params["linear"] @ x + params["translation"]
    half = x.shape[0] // 2
    z = torch.complex(x[:half], x[half:])
    if name == "complex_diagonal":
        w = torch.complex(params["real"], params["imag"])
    else:
        w = torch.complex(torch.cos(params["phase"]), torch.sin(params["phase"]))
    out = z * w
    return torch.cat([out.real, out.imag])


def naive_compare(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if name == "dot":
        return (a * b).sum()
    if name == "cos":
        return (a * b).sum() / (a.norm() * b.norm())
    if name == "l2":
        return -(a - b).norm()
    return -((a - b) ** 2).sum()


def naive_score(model: Model, tables: dict[str, torch.Tensor], s: torch.Tensor, r: int, d: torch.Tensor,
                predict: str = "rhs") -> torch.Tensor:
    """The score of one edge, from PBG's definitions (see shardgraph.model.model)."""
    rel = model.relations[r]
    op = rel.operator
    comparator = model.comparator.name

    def params(side: str) -> dict[str, torch.Tensor]:
        prefix = f"{side}/{op}/"
        return {k[len(prefix):]: v[r] for k, v in tables.items() if k.startswith(prefix)}

    if not model.dynamic:
        return naive_compare(comparator, s, naive_operator(op, params("rhs"), d))
    if predict == "rhs":
        return naive_compare(comparator, naive_operator(op, params("lhs"), s), d)
    return naive_compare(comparator, s, naive_operator(op, params("rhs"), d))


def naive_loss(name: str, pos: torch.Tensor, neg: torch.Tensor, margin: float) -> torch.Tensor:
    if name == "softmax":
        return torch.logsumexp(torch.cat([pos.view(1), neg]), 0) - pos
    if name == "logistic":
        return torch.nn.functional.softplus(-pos) + torch.nn.functional.softplus(neg).mean()
    return torch.relu(margin - pos + neg).sum()


# ----------------------------------------------------------------------------- registries


def test_registries_match_the_config_names() -> None:
    assert set(OPERATORS.names()) == set(OPERATOR_NAMES)
    assert set(COMPARATORS.names()) == set(COMPARATOR_NAMES)
    assert set(LOSSES.names()) == set(LOSS_NAMES)
    from shardgraph.errors import ConfigError

    with pytest.raises(ConfigError, match=r"Unknown operator 'translate'. Known: .*translation"):
        OPERATORS.get("translate")


# ----------------------------------------------------------------------------- scores


@pytest.mark.parametrize(("operator", "comparator", "dynamic"),
                         list(itertools.product(OPERATOR_NAMES, COMPARATOR_NAMES, (False, True))))
def test_batched_score_equals_naive(tiny_dataset: Path, operator: str, comparator: str, dynamic: bool) -> None:
    model = Model(make_config(operator, comparator, dynamic), Dataset(tiny_dataset))
    generator = torch.Generator().manual_seed(1)
    tables = {}
    for prefix, op in model.operators.items():
        for name, value in random_params(op, len(model.relations), generator).items():
            tables[f"{prefix}/{name}"] = value
    lhs, rhs = torch.randn(7, DIM, generator=generator), torch.randn(7, DIM, generator=generator)
    rel = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    batched = model.score(lhs, rel, rhs, tables)
    naive = torch.stack([naive_score(model, tables, lhs[i], int(rel[i]), rhs[i]) for i in range(7)])
    torch.testing.assert_close(batched, naive, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_loss_gradients_equal_autograd(loss_name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    loss = make_loss(loss_name, 0.5)
    pos = torch.randn(5, generator=generator, requires_grad=True)
    neg = torch.randn(5, 7, generator=generator, requires_grad=True)
    valid = torch.rand(5, 7, generator=generator) > 0.3
    reference = loss(pos, neg, valid)
    reference.sum().backward()
    value, d_pos, d_neg = loss_and_grad(loss, pos.detach(), neg.detach().clone(), ~valid)
    torch.testing.assert_close(value, reference.detach())
    torch.testing.assert_close(d_pos, pos.grad)
    torch.testing.assert_close(d_neg, neg.grad)


def test_loss_values_by_hand() -> None:
    pos = torch.tensor([1.0, 0.0])
    neg = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    valid = torch.tensor([[True, True], [True, False]])
    softmax = make_loss("softmax", 0.1)(pos, neg, valid)
    assert softmax[0].item() == pytest.approx(math.log(math.e + 1 + math.e**2) - 1.0)
    assert softmax[1].item() == pytest.approx(math.log(2.0))
    ranking = make_loss("ranking", 0.5)(pos, neg, valid)
    assert ranking.tolist() == pytest.approx([0.0 + 1.5, 0.5])
    logistic = make_loss("logistic", 0.1)(pos, neg, valid)
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert logistic[0].item() == pytest.approx(softplus(-1.0) + (softplus(0.0) + softplus(2.0)) / 2)
    assert logistic[1].item() == pytest.approx(softplus(0.0) + softplus(0.0))


# ----------------------------------------------------------------------------- the training step


def _step_case(tiny_dataset: Path, operator: str, comparator: str, dynamic: bool, loss: str,
               all_negs: bool = False, regularizer: str = "none", uniform: int = 4, batch: bool = True,
               corrected: bool = False, own: bool = False, lhs: list[int] | None = None,
               rhs: list[int] | None = None, self_loops: tuple[tuple[int, int], ...] = ()) -> None:
    """The batch step against one-edge-at-a-time autograd. `own`: training.self_negatives, with
    `self_loops` the (entity, relation) of the training self-loops."""
    chunk, chunks = 3, 2
    config = make_config(operator, comparator, dynamic, loss, num_batch_negs=chunk if batch else 0,
                         num_uniform_negs=uniform, all_negs=all_negs, self_negatives=own)
    if regularizer != "none":
        config = config.replace(model=type(config.model)(**{**config.model.__dict__, "regularizer": regularizer,
                                                            "regularization_weight": 0.01}))
    model = Model(config, Dataset(tiny_dataset))
    generator = torch.Generator().manual_seed(3)
    tables = {}
    for prefix, op in model.operators.items():
        for name, value in random_params(op, len(model.relations), generator).items():
            tables[f"{prefix}/{name}"] = value
    state = {k: torch.zeros_like(v) for k, v in tables.items()}
    embeddings = torch.randn(ENTITIES, DIM, generator=generator)
    table = Table(embeddings.clone(), torch.zeros(ENTITIES), ENTITIES)
    step = BatchStep(model, config.training, {k: v.clone() for k, v in tables.items()}, state)
    n = chunk * chunks
    lhs = torch.tensor(lhs or [0, 1, 2, 3, 3, 5])
    rhs = torch.tensor(rhs or [4, 4, 7, 8, 9, 1])  # a repeated rhs in chunk 0: masked from its own negatives
    rel = torch.tensor([0, 1, 2, 0, 1, 2]) if dynamic else torch.zeros(n, dtype=torch.long)
    if all_negs:
        lhs_neg = rhs_neg = torch.arange(ENTITIES).unsqueeze(0)
        chunk = n
    else:
        lhs_neg = torch.tensor([[5, 6, 0, 11], [2, 2, 10, 1]])[:, :uniform]
        rhs_neg = torch.tensor([[4, 7, 1, 0], [8, 3, 3, 6]])[:, :uniform]  # 4, 8: positives of chunks 0, 1
        if not batch:  # one chunk: the whole batch shares the uniform negatives
            chunk, lhs_neg, rhs_neg = n, lhs_neg[:1], rhs_neg[:1]
    corrections = (torch.randn(ENTITIES, generator=generator), torch.randn(ENTITIES, generator=generator)) \
        if corrected else None
    keys = torch.tensor(sorted(e * len(model.relations) + r for e, r in self_loops), dtype=torch.long)
    result = step.compute(table, table, lhs, rel, rhs, lhs_neg, rhs_neg, chunk, corrections, keys)

    # naive: one edge at a time, with autograd
    emb = embeddings.clone().requires_grad_()
    params = {k: v.clone().requires_grad_() for k, v in tables.items()}
    total = torch.zeros(())
    for i in range(n):
        c = i // chunk
        r = int(rel[i])
        weight = model.relations[r].weight
        sides = (("rhs", lhs, rhs, rhs, rhs_neg), ("lhs", rhs, lhs, lhs, lhs_neg))
        for predict, known, truth, batch_ids, uniform_ids in sides:
            candidates = list(range(ENTITIES)) if all_negs else \
                (batch_ids[c * chunk : (c + 1) * chunk].tolist() if batch else []) + uniform_ids[c].tolist()
            candidates = [x for x in candidates if x != int(truth[i])]
            known_vector = emb[int(known[i])]

            def score(other: int, predict: str = predict, known_vector: torch.Tensor = known_vector,
                      r: int = r, shifted: bool = True) -> torch.Tensor:
                shift = 0.0 if corrections is None or not shifted else float(corrections[predict == "rhs"][other])
                if predict == "rhs":
                    return naive_score(model, params, known_vector, r, emb[other], "rhs") - shift
                return naive_score(model, params, emb[other], r, known_vector, "lhs") - shift

            pos = score(int(truth[i]))
            scores = [score(x) for x in candidates]
            # the query's own entity: one more negative, sampled with certainty (never corrected),
            # unless the edge or a training edge (e, r, e) is a self-loop
            if own and int(known[i]) != int(truth[i]) and (int(known[i]), r) not in self_loops:
                scores.append(score(int(known[i]), shifted=False))
            neg = torch.stack(scores)
            total = total + weight * naive_loss(loss, pos, neg, config.model.margin)
    if regularizer != "none":
        total = total + 0.01 * (naive_regularizer(regularizer, emb[lhs], operator)
                                + naive_regularizer(regularizer, emb[rhs], operator))
        for direction in model.directions(model.relations[0]):
            for prefix in (direction.query_op, direction.candidate_op if not dynamic else None):
                if prefix:
                    rows = rel if dynamic else torch.zeros(n, dtype=torch.long)
                    total = total + 0.01 * naive_param_regularizer(regularizer, params, prefix, rows)
    total.backward()
    assert result.loss == pytest.approx(total.item(), rel=1e-4, abs=1e-4)
    grad = torch.zeros(ENTITIES, DIM)
    for _, index, leaf in result.leaves:
        if leaf.grad is not None:
            grad.index_add_(0, index, leaf.grad)
    torch.testing.assert_close(grad, emb.grad, rtol=1e-4, atol=1e-4)
    for key, leaf in result.relation_leaves.items():
        full = torch.zeros_like(tables[key])
        if leaf.grad is not None:
            full[result.relations_used] = leaf.grad
        expected = params[key].grad if params[key].grad is not None else torch.zeros_like(full)
        torch.testing.assert_close(full, expected, rtol=1e-4, atol=1e-4)


def naive_regularizer(name: str, x: torch.Tensor, operator: str) -> torch.Tensor:
    if name == "l2":
        return (x**2).sum()
    if operator in ("complex_diagonal", "rotate"):
        half = x.shape[1] // 2
        return ((x[:, :half] ** 2 + x[:, half:] ** 2) ** 1.5).sum()
    return (x.abs() ** 3).sum()


def naive_param_regularizer(name: str, params: dict[str, torch.Tensor], prefix: str,
                            rows: torch.Tensor) -> torch.Tensor:
    chosen = {k[len(prefix) + 1:]: v[rows] for k, v in params.items() if k.startswith(prefix + "/")}
    if name == "l2":
        return sum(((v**2).sum() for v in chosen.values()), torch.zeros(()))
    if "real" in chosen:
        return ((chosen["real"] ** 2 + chosen["imag"] ** 2) ** 1.5).sum()
    return sum(((v.abs() ** 3).sum() for k, v in chosen.items() if k != "phase"), torch.zeros(()))


@pytest.mark.parametrize(("comparator", "loss"), list(itertools.product(COMPARATOR_NAMES, LOSS_NAMES)))
def test_step_equals_naive_per_comparator_and_loss(tiny_dataset: Path, comparator: str, loss: str) -> None:
    _step_case(tiny_dataset, "translation", comparator, dynamic=False, loss=loss)


@pytest.mark.parametrize(("operator", "dynamic"), list(itertools.product(OPERATOR_NAMES, (False, True))))
def test_step_equals_naive_per_operator(tiny_dataset: Path, operator: str, dynamic: bool) -> None:
    _step_case(tiny_dataset, operator, "dot", dynamic=dynamic, loss="softmax")


@pytest.mark.parametrize(("loss", "uniform", "batch", "dynamic"), [
    ("softmax", 0, True, False), ("ranking", 0, True, True), ("logistic", 4, False, False), ("softmax", 4, False, True),
])
def test_step_with_one_negative_block_equals_naive(tiny_dataset: Path, loss: str, uniform: int, batch: bool,
                                                   dynamic: bool) -> None:
    _step_case(tiny_dataset, "diagonal", "dot", dynamic=dynamic, loss=loss, uniform=uniform, batch=batch)


@pytest.mark.parametrize(("comparator", "loss"), list(itertools.product(COMPARATOR_NAMES, LOSS_NAMES)))
def test_step_all_negs_equals_naive(tiny_dataset: Path, comparator: str, loss: str) -> None:
    _step_case(tiny_dataset, "complex_diagonal", comparator, dynamic=True, loss=loss, all_negs=True)


@pytest.mark.parametrize(("operator", "regularizer"), [("complex_diagonal", "n3"), ("diagonal", "n3"),
                                                       ("translation", "l2")])
def test_step_regularizers_equal_naive(tiny_dataset: Path, operator: str, regularizer: str) -> None:
    _step_case(tiny_dataset, operator, "dot", dynamic=True, loss="softmax", regularizer=regularizer)


@pytest.mark.parametrize("operator", ["none", "diagonal"])
def test_sampling_correction_equals_naive(tiny_dataset: Path, operator: str) -> None:
    """Each candidate's score (the positive's too) minus its side's correction, in both directions."""
    _step_case(tiny_dataset, operator, "dot", dynamic=True, loss="softmax", corrected=True)
    _step_case(tiny_dataset, operator, "cos", dynamic=False, loss="softmax", corrected=True)


def test_softmax_step_without_the_compiled_kernel_equals_naive(tiny_dataset: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the C kernels were not built, torch ops compute the same softmax step."""
    from shardgraph.training import step

    monkeypatch.setattr(step, "softmax_blocks_fused", lambda *args: None)
    _step_case(tiny_dataset, "none", "dot", dynamic=True, loss="softmax", corrected=True)
    _step_case(tiny_dataset, "diagonal", "cos", dynamic=False, loss="softmax")


@pytest.mark.parametrize("path", ["compiled", "torch ops"])
def test_rowwise_adagrad_steps_each_occurrence(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paths step a repeated row once per occurrence, one after the other (the same results
    whether or not a compiler was present at install)."""
    from shardgraph.training import optim

    if path == "compiled":
        require_kernels()
    else:
        monkeypatch.setattr(optim, "_kernels", lambda: None)
    generator = torch.Generator().manual_seed(0)
    table, state = torch.randn(50, 8, generator=generator), torch.rand(50, generator=generator)
    index = torch.randint(50, (90,), generator=generator)[::3]  # strided, with repeats
    index[7] = index[3] = index[1]  # a row three times
    assert len(torch.unique(index)) < len(index)
    grad = torch.randn(30, 8, generator=generator)
    grad[4] = 0.0
    expected_table, expected_state = table.clone(), state.clone()
    for i, row in enumerate(index.tolist()):  # one occurrence after the other
        if bool((grad[i] == 0).all()):
            continue
        expected_state[row] += (grad[i] ** 2).mean()
        expected_table[row] -= 0.1 / (expected_state[row].sqrt() + optim.EPS) * grad[i]
    optim.rowwise_adagrad_(table, state, index, grad.clone(), 0.1)
    torch.testing.assert_close(state, expected_state)
    torch.testing.assert_close(table, expected_table)


def test_bfloat16_rowwise_adagrad_rounds_to_a_neighbour_without_bias() -> None:
    """bfloat16 tables: each value lands on one of the two bfloat16 neighbours of the float32
    result, and on average (stochastic rounding) on the float32 result itself."""
    from shardgraph.training import optim

    generator = torch.Generator().manual_seed(1)
    start = torch.randn(1, 64, generator=generator).to(torch.bfloat16)
    grad = torch.randn(1, 64, generator=generator) * 1e-3
    state = torch.ones(1)
    expected = start.float() - 0.01 / (1.0 + (grad**2).mean()).sqrt() * grad
    results = []
    for _ in range(400):
        table = start.clone()
        optim.rowwise_adagrad_(table, state.clone(), torch.zeros(1, dtype=torch.long), grad.clone(), 0.01)
        results.append(table.float())
    stacked = torch.stack(results)
    # bfloat16 keeps 8 significant bits: neighbours are 2^(exponent - 7) apart
    ulp = torch.exp2(torch.floor(torch.log2(expected.abs())) - 7)
    assert bool(((stacked - expected).abs() <= ulp * 1.01).all())
    assert float((stacked.mean(0) - expected).abs().max()) < float(ulp.max()) * 0.25


# edges for the own-negative tests:
# edge 1 is a self-loop (5, r1, 5); (3, r0, 3) is a training self-loop, so 3 is no negative of (3, r0, ?)
OWN_LHS, OWN_RHS, OWN_SELF_LOOPS = [0, 5, 2, 3, 6, 11], [4, 5, 7, 8, 9, 1], ((3, 0), (5, 1), (1, 2))


@pytest.mark.parametrize(("loss", "comparator", "batch", "dynamic"), [
    ("softmax", "dot", True, True), ("softmax", "cos", False, False), ("softmax", "l2", True, False),
    ("ranking", "dot", True, True), ("logistic", "squared_l2", False, True),
])
def test_own_negatives_equal_naive(tiny_dataset: Path, loss: str, comparator: str, batch: bool,
                                   dynamic: bool) -> None:
    """training.self_negatives: each edge's query entity is one more negative of its own query, in
    both directions; a self-loop edge, or a training self-loop of its relation, keeps it out."""
    for operator in ("complex_diagonal", "diagonal"):
        _step_case(tiny_dataset, operator, comparator, dynamic=dynamic, loss=loss, batch=batch, own=True,
                   lhs=OWN_LHS, rhs=OWN_RHS, self_loops=OWN_SELF_LOOPS)


def test_own_negatives_with_correction_and_without_the_kernel_equal_naive(
        tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The own negative added to the softmax with a sampling correction, by the compiled kernel and
    by torch ops (one block and several)."""
    from shardgraph.training import step

    _step_case(tiny_dataset, "diagonal", "dot", dynamic=True, loss="softmax", corrected=True, own=True,
               lhs=OWN_LHS, rhs=OWN_RHS, self_loops=OWN_SELF_LOOPS)
    monkeypatch.setattr(step, "softmax_blocks_fused", lambda *args: None)
    for uniform in (0, 4):
        _step_case(tiny_dataset, "diagonal", "dot", dynamic=True, loss="softmax", corrected=True, own=True,
                   uniform=uniform, lhs=OWN_LHS, rhs=OWN_RHS, self_loops=OWN_SELF_LOOPS)


def test_positive_is_excluded_from_its_negatives(tiny_dataset: Path) -> None:
    """A uniform negative equal to the edge's own rhs changes nothing: it is masked out."""
    config = make_config("none", "dot", True, "softmax", num_batch_negs=1, num_uniform_negs=2)
    model = Model(config, Dataset(tiny_dataset))
    embeddings = torch.randn(ENTITIES, DIM, generator=torch.Generator().manual_seed(0))
    step = BatchStep(model, config.training, {}, {})
    table = Table(embeddings, torch.zeros(ENTITIES), ENTITIES)
    lhs, rel, rhs = torch.tensor([0]), torch.tensor([0]), torch.tensor([2])
    lhs_neg = torch.tensor([[5]])

    def loss(rhs_neg: list[int]) -> float:
        return step.compute(table, table, lhs, rel, rhs, lhs_neg, torch.tensor([rhs_neg]), 1).loss

    assert loss([2, 7]) == pytest.approx(loss([7]))  # 2 is the positive itself
    assert loss([9, 7]) > loss([7])  # a real negative counts


@pytest.mark.parametrize("corrected", [False, True])
def test_compiled_softmax_equals_torch_ops(corrected: bool) -> None:
    """The compiled softmax over candidate blocks (masks, correction, loss, gradients in one pass)
    equals the reference computed with torch ops, repeated ids and huge scores included."""
    from shardgraph.model.losses import softmax_blocks_fused
    require_kernels()
    generator = torch.Generator().manual_seed(1)
    chunks, chunk, uniform, entities = 5, 7, 9, 12  # few entities: many repeats and collisions
    n = chunks * chunk
    pos_ids = torch.randint(entities, (n,), generator=generator)
    blocks = [(torch.randn(chunks, chunk, chunk, generator=generator) * 10, pos_ids.view(chunks, chunk)),
              (torch.randn(chunks, chunk, uniform, generator=generator) * 10,
               torch.randint(entities, (chunks, uniform), generator=generator))]
    blocks[1][0][0, 0, 0] = 80.0  # far above the rest: every other exp underflows
    pos = torch.randn(n, generator=generator) * 10
    correction = torch.randn(entities, generator=generator) if corrected else None

    # reference: shift, mask, softmax over [positive, candidates] with torch
    shifted = [s - (correction[i].unsqueeze(1) if correction is not None else 0) for s, i in blocks]
    invalid = [pos_ids.view(chunks, chunk, 1) == i.unsqueeze(1) for _, i in blocks]
    masked = [s.masked_fill(v, float("-inf")).reshape(n, -1) for s, v in zip(shifted, invalid, strict=True)]
    logits = torch.cat([(pos - (correction[pos_ids] if correction is not None else 0)).unsqueeze(1), *masked], 1)
    logits.requires_grad_()
    expected_loss = -torch.log_softmax(logits, 1)[:, 0]
    expected_loss.sum().backward()
    assert logits.grad is not None
    expected_blocks = logits.grad[:, 1:].split([chunk, uniform], dim=1)

    result = softmax_blocks_fused(pos, pos_ids, chunk, [(s.clone(), i) for s, i in blocks], correction)
    assert result is not None
    loss, d_pos, d_blocks = result
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d_pos, logits.grad[:, 0], rtol=1e-5, atol=1e-6)
    for got, expected, v in zip(d_blocks, expected_blocks, invalid, strict=True):
        torch.testing.assert_close(got.reshape(n, -1), expected, rtol=1e-5, atol=1e-6)
        assert bool((got[v] == 0).all())  # excluded candidates get exactly no gradient

