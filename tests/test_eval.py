"""Evaluation: exact ranks on a hand-made graph, fair ties, filtering, sampled candidates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shardgraph.config import load_config
from shardgraph.data.dataset import LHS, RHS, Dataset
from shardgraph.data.importer import import_edges
from shardgraph.eval.evaluate import evaluate
from shardgraph.eval.ranking import RankCounts, metrics_from_counts
from shardgraph.storage.run import create_run
from tests.conftest import REPO, write_lines


@pytest.fixture
def hand_made_run(tmp_path: Path) -> Path:
    """Entities a b c d (ids 0-3) with 1-d embeddings 1 2 3 3; score = lhs * rhs."""
    train = write_lines(tmp_path / "train.tsv", ["a\tr\tb", "c\tr\td"])
    test = write_lines(tmp_path / "test.tsv", ["a\tr\tc", "b\tr\td"])
    import_edges([train], tmp_path / "ds", test=[test], progress=False)
    config = load_config(None, ["model.dimension=1", "model.operator=none", "model.comparator=dot"])
    dataset = Dataset(tmp_path / "ds")
    create_run(tmp_path / "run", config, dataset, {"entity": [torch.tensor([[1.0], [2.0], [3.0], [3.0]])]})
    return tmp_path / "run"


def test_exact_raw_metrics(hand_made_run: Path) -> None:
    # rank rhs of (a r c): c=3 ties with d=3 -> 1.5; rank lhs of (a r c): 3 above -> 4
    # rank rhs of (b r d): d=6 ties with c -> 1.5; rank lhs of (b r d): c, d above -> 3
    result = evaluate(hand_made_run, filtered=False)
    assert result["edges"] == 2
    assert result["mrr"] == pytest.approx((1 / 1.5 + 1 / 4 + 1 / 1.5 + 1 / 3) / 4)
    assert result["mr"] == pytest.approx(2.5)
    assert result["hits@1"] == 0.0 and result["hits@3"] == pytest.approx(0.75) and result["hits@10"] == 1.0
    assert result["auc"] == pytest.approx(0.5)
    assert result["rhs"]["mrr"] == pytest.approx(1 / 1.5)


def test_exact_filtered_metrics(hand_made_run: Path) -> None:
    # filtering removes the train edge (c r d) from the lhs candidates of (b r d): rank 3 -> 2
    result = evaluate(hand_made_run, filtered=True)
    assert result["mrr"] == pytest.approx((1 / 1.5 + 1 / 4 + 1 / 1.5 + 1 / 2) / 4)
    assert result["mr"] == pytest.approx(2.25)
    assert result["lhs"]["mr"] == pytest.approx(3.0)


def test_eval_takes_its_defaults_from_the_runs_eval_section(hand_made_run: Path) -> None:
    config = (hand_made_run / "config.toml").read_text()
    assert "[eval]" in config
    (hand_made_run / "config.toml").write_text(config.replace("filtered = true", "filtered = false", 1))
    assert evaluate(hand_made_run)["mr"] == pytest.approx(2.5)  # raw, as the run's config says
    assert evaluate(hand_made_run, filtered=True)["mr"] == pytest.approx(2.25)  # an argument wins
    out = subprocess.run([sys.executable, "-m", "shardgraph", "eval", str(hand_made_run), "--json"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1])["filtered"] is False


def test_sampled_negatives_rank_among_the_sample(hand_made_run: Path) -> None:
    # a sample of all 4 entities (unique) is the full ranking
    result = evaluate(hand_made_run, filtered=False, negatives=1000)
    assert result["mrr"] == pytest.approx((1 / 1.5 + 1 / 4 + 1 / 1.5 + 1 / 3) / 4)


@pytest.mark.parametrize("filtered", [True, False])
def test_sampled_ranking_in_column_blocks_equals_one_block(tmp_path: Path, umls: dict[str, Path],
                                                            monkeypatch: pytest.MonkeyPatch, filtered: bool) -> None:
    """A sample scored a few columns at a time (as 1M candidates are) gives the counts of one block."""
    from shardgraph.eval import evaluate as evaluate_module

    import_edges([umls["train"]], tmp_path / "ds", test=[umls["test"]], partitions=2, progress=False)
    dataset = Dataset(tmp_path / "ds")
    config = load_config(None, ["model.dimension=3", "model.operator=none", "model.comparator=dot"])
    generator = torch.Generator().manual_seed(0)
    tables = [torch.randn(count, 3, generator=generator) for count in dataset.entity_types["entity"].partition_counts]
    run = create_run(tmp_path / "run", config, dataset, {"entity": tables})
    whole = evaluate(run, split="test", filtered=filtered, negatives=60, batch_size=37)
    monkeypatch.setattr(evaluate_module, "SCORE_BLOCK", 37 * 7)  # blocks of 7 sampled columns
    blocked = evaluate(run, split="test", filtered=filtered, negatives=60, batch_size=37)
    for key in ("mrr", "mr", "hits@1", "hits@10", "auc"):
        assert blocked[key] == pytest.approx(whole[key], rel=1e-12), key
    assert whole["mr"] < 61  # ranked among the sample, not all 135 entities


def test_cli_eval_json(hand_made_run: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "shardgraph", "eval", str(hand_made_run), "--raw", "--json"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) >= {"split", "filtered", "edges", "mrr", "mr", "hits@1", "hits@3", "hits@10", "auc"}
    assert result["filtered"] is False and result["mr"] == pytest.approx(2.5)


def test_fair_ties_in_metrics() -> None:
    counts = RankCounts(greater=np.array([0, 2]), equal=np.array([3, 0]), candidates=np.array([10, 10]))
    metrics = metrics_from_counts(counts)
    assert counts.ranks.tolist() == [2.5, 3.0]
    assert metrics["mrr"] == pytest.approx((1 / 2.5 + 1 / 3) / 2)
    assert metrics["hits@1"] == 0.0


def _naive_ranks(dataset: Dataset, tables: list[torch.Tensor], split: str, filtered: bool,
                 candidates: str) -> list[float]:
    """Fair ranks of every edge of a split, both directions, scored one triple at a time with the
    dot product of the raw embeddings (operator none, comparator dot), looked up by name."""
    partitions = dataset.entity_types["entity"].partitions
    where = {name: (p, local) for p in range(partitions)
             for local, name in enumerate(dataset.entity_names("entity", p))}
    vector = {name: tables[p][local].double() for name, (p, local) in where.items()}
    relation_names = [r.name for r in dataset.relations]
    triples = {split_name: [] for split_name in ("train", "valid", "test")}
    for split_name in triples:
        for info, edges in dataset.iter_edges(split_name):
            lhs_names = dataset.entity_names("entity", info.lhs)
            rhs_names = dataset.entity_names("entity", info.rhs)
            triples[split_name] += [(lhs_names[h], relation_names[r], rhs_names[t]) for h, r, t in edges.tolist()]
    known = {t for edges in triples.values() for t in edges}
    ranks = []
    for h, r, t in triples[split]:
        for predict in ("rhs", "lhs"):
            true, fixed = (t, h) if predict == "rhs" else (h, t)
            true_score = float(vector[fixed] @ vector[true])
            greater = equal = 0
            for candidate, (p, _) in where.items():
                if candidate == true or (candidates == "partition" and p != where[true][0]):
                    continue
                triple = (h, r, candidate) if predict == "rhs" else (candidate, r, t)
                if filtered and triple in known:
                    continue
                score = float(vector[fixed] @ vector[candidate])
                greater += score > true_score
                equal += score == true_score
            ranks.append(1 + greater + equal / 2)
    return ranks


@pytest.mark.parametrize("filtered", [True, False])
@pytest.mark.parametrize("candidates", ["partition", "all"])
def test_partitioned_ranking_equals_naive(tmp_path: Path, umls: dict[str, Path], filtered: bool,
                                          candidates: str) -> None:
    """UMLS in 4 partitions: filtered and raw ranks, among all entities or the true end's partition,
    equal a per-edge ranking by name (batches smaller than a partition's edges: many batches)."""
    import_edges([umls["train"]], tmp_path / "ds", valid=[umls["valid"]], test=[umls["test"]], partitions=4,
                 progress=False)
    dataset = Dataset(tmp_path / "ds")
    config = load_config(None, ["model.dimension=3", "model.operator=none", "model.comparator=dot"])
    generator = torch.Generator().manual_seed(0)
    tables = [torch.randn(count, 3, generator=generator) for count in dataset.entity_types["entity"].partition_counts]
    run = create_run(tmp_path / "run", config, dataset, {"entity": tables})
    result = evaluate(run, split="test", filtered=filtered, candidates=candidates, batch_size=37)
    ranks = np.array(_naive_ranks(dataset, tables, "test", filtered, candidates))
    assert result["edges"] * 2 == len(ranks)
    assert result["mr"] == pytest.approx(ranks.mean(), rel=1e-9)
    assert result["mrr"] == pytest.approx((1 / ranks).mean(), rel=1e-9)
    assert result["hits@10"] == pytest.approx((ranks <= 10).mean(), rel=1e-9)




@pytest.mark.parametrize("candidates,negatives", [("all", 0), ("partition", 0), ("all", 50)])
def test_progress_counts_every_score_it_announced(tmp_path: Path, umls: dict[str, Path], candidates: str,
                                                  negatives: int) -> None:
    """The eval progress bar's total (its ETA) is the work done: queries x candidates, both directions."""
    from shardgraph.eval.evaluate import Evaluator

    import_edges([umls["train"]], tmp_path / "ds", test=[umls["test"]], partitions=4, progress=False)
    dataset = Dataset(tmp_path / "ds")
    counts = dataset.entity_types["entity"].partition_counts
    config = load_config(None, ["model.dimension=3"])
    trained = create_run(tmp_path / "run", config, dataset, {"entity": [torch.randn(c, 3) for c in counts]})
    evaluator = Evaluator(trained, filtered=True, negatives=negatives, batch_size=37, candidates=candidates)
    edges = dataset.global_edges("test")
    starts = np.concatenate([[0], np.cumsum(counts)])
    if negatives:
        expected = 2 * len(edges) * negatives
    elif candidates == "all":
        expected = 2 * len(edges) * sum(counts)
    else:
        expected = sum(counts[int(np.searchsorted(starts, end, side="right")) - 1]
                       for end in np.concatenate([edges[:, LHS], edges[:, RHS]]).tolist())
    assert sum(evaluator.work(edges, predict) for predict in ("rhs", "lhs")) == expected
    evaluator.evaluate("test")
    assert evaluator.scored == expected


@pytest.mark.parametrize("compiled", [True, False])
def test_greater_and_equal_counts_equal_a_naive_count(compiled: bool) -> None:
    """The ranking's one-pass counts (compiled kernel, or torch ops without it) against a count by
    hand: ties planted, NaN scores (never counted), and a block whose rows are a slice of wider rows."""
    from shardgraph.eval.ranking import greater_and_equal
    from tests.conftest import require_kernels

    if compiled:
        require_kernels()
    generator = torch.Generator().manual_seed(0)
    wide = torch.randint(-3, 4, (37, 700), generator=generator).float() / 2  # many exact ties
    wide[5, 10:20] = float("nan")
    block = wide[:, 3:650]  # row stride 700, 647 columns
    target = torch.randint(-3, 4, (37,), generator=generator).float() / 2
    greater, equal = greater_and_equal(block, target, compiled=compiled)
    rows = block.tolist()
    assert greater.tolist() == [sum(s > t for s in row) for row, t in zip(rows, target.tolist(), strict=True)]
    assert equal.tolist() == [sum(s == t for s in row) for row, t in zip(rows, target.tolist(), strict=True)]
    assert greater.dtype == equal.dtype == torch.int64
