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
from shardgraph.data.dataset import Dataset
from shardgraph.data.importer import import_edges
from shardgraph.eval.evaluate import evaluate
from shardgraph.eval.ranking import KnownEdges, RankCounts, metrics_from_counts
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


def test_sampled_negatives_rank_among_the_sample(hand_made_run: Path) -> None:
    # a sample of all 4 entities (unique) is the full ranking
    result = evaluate(hand_made_run, filtered=False, negatives=1000)
    assert result["mrr"] == pytest.approx((1 / 1.5 + 1 / 4 + 1 / 1.5 + 1 / 3) / 4)


def test_cli_eval_json(hand_made_run: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "shardgraph", "eval", str(hand_made_run), "--raw", "--json"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) >= {"split", "filtered", "edges", "mrr", "mr", "hits@1", "hits@3", "hits@10", "auc"}
    assert result["filtered"] is False and result["mr"] == pytest.approx(2.5)


def test_known_edges_lookup() -> None:
    known = KnownEdges(np.array([0, 0, 1, 0]), np.array([5, 3, 3, 5]), np.array([0, 0, 0, 1]), 2)
    rows, ids = known.lookup(np.array([0, 1, 2, 0]), np.array([0, 0, 0, 1]))
    assert list(zip(rows.tolist(), ids.tolist(), strict=True)) == [(0, 3), (0, 5), (1, 3), (3, 5)]


def test_fair_ties_in_metrics() -> None:
    counts = RankCounts(greater=np.array([0, 2]), equal=np.array([3, 0]), candidates=np.array([10, 10]))
    metrics = metrics_from_counts(counts)
    assert counts.ranks.tolist() == [2.5, 3.0]
    assert metrics["mrr"] == pytest.approx((1 / 2.5 + 1 / 3) / 2)
    assert metrics["hits@1"] == 0.0


def test_partition_candidates_rank_within_the_true_partition(tmp_path: Path) -> None:
    edges = [f"e{i}\tr\te{(i * 7 + 3) % 40}" for i in range(40)]
    train = write_lines(tmp_path / "train.tsv", edges)
    test = write_lines(tmp_path / "test.tsv", edges[:10])
    import_edges([train], tmp_path / "ds", test=[test], partitions=4, progress=False)
    dataset = Dataset(tmp_path / "ds")
    config = load_config(None, ["model.dimension=4"])
    generator = torch.Generator().manual_seed(0)
    tables = [torch.randn(count, 4, generator=generator) for count in dataset.entity_types["entity"].partition_counts]
    run = create_run(tmp_path / "run", config, dataset, {"entity": tables})
    everything = evaluate(run, filtered=False)
    partition = evaluate(run, filtered=False, candidates="partition")
    assert partition["mr"] <= everything["mr"]
    assert partition["negatives"] == "partition"
    one = evaluate(run, filtered=False, candidates="partition", max_edges=1)
    assert one["mr"] <= 10  # at most 10 entities per partition
