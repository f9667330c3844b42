"""The benches' graph generator (bench/graphs.py), checked against a plain reading of the files it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import graphs


def read(path: Path) -> list[tuple[str, str]]:
    edges = []
    for line in path.read_text().splitlines():
        src, rel, dst = line.split("\t")
        assert rel == "r0" and src.startswith("n") and dst.startswith("n")
        edges.append((src, dst))
    return edges


@pytest.mark.parametrize("block_edges", [1_000_000, 7_000])  # one block; several blocks and shards
def test_distinct_edges_and_holdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_edges: int) -> None:
    monkeypatch.setattr(graphs, "BLOCK_EDGES", block_edges)
    spec = graphs.GraphSpec(nodes=2_000, edges=20_000, seed=5)
    summary = graphs.generate(spec, tmp_path / "g.tsv", holdout=0.1)
    train, test = read(tmp_path / "g_train.tsv"), read(tmp_path / "g_test.tsv")
    everything = train + test
    assert len(everything) == len(set(everything)) == 20_000
    assert all(src != dst for src, dst in everything)
    assert all(0 <= int(n[1:]) < 2_000 for edge in everything for n in edge)
    trained = {n for edge in train for n in edge}
    assert all(src in trained and dst in trained for src, dst in test)
    assert 1_500 < len(test) < 2_500  # about 10%
    assert summary["edges_per_file"] == {"train": len(train), "test": len(test)}
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_seeded_and_power_law(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graphs, "BLOCK_EDGES", 9_000)
    spec = graphs.GraphSpec(nodes=5_000, edges=30_000, seed=1)
    graphs.generate(spec, tmp_path / "a.tsv")
    graphs.generate(spec, tmp_path / "b.tsv")
    graphs.generate(graphs.GraphSpec(nodes=5_000, edges=30_000, seed=2), tmp_path / "c.tsv")
    a = (tmp_path / "a.tsv").read_bytes()
    assert a == (tmp_path / "b.tsv").read_bytes() and a != (tmp_path / "c.tsv").read_bytes()
    out_degree: dict[str, int] = {}
    for src, _ in read(tmp_path / "a.tsv"):
        out_degree[src] = out_degree.get(src, 0) + 1
    degrees = sorted(out_degree.values(), reverse=True)
    assert degrees[0] > 20 * (30_000 / 5_000)  # hubs far above the mean degree of 6


def test_communities_hold_most_edges(tmp_path: Path) -> None:
    spec = graphs.GraphSpec(nodes=3_000, edges=15_000, seed=0, communities=10)
    graphs.generate(spec, tmp_path / "g.tsv")
    community = graphs._Sampler(spec, np.random.Generator(np.random.PCG64(0))).community  # the seed's draw
    edges = read(tmp_path / "g.tsv")
    inside = sum(community[int(s[1:])] == community[int(d[1:])] for s, d in edges) / len(edges)
    assert inside > 0.6  # 70% drawn inside (+ 3% by chance); plain Chung-Lu would give about 10%
