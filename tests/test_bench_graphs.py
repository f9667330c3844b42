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


def test_typed_graph_is_seeded_distinct_and_shares_communities(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/typed_graphs.py: exact counts of distinct edges per relation, test ends trained, same seed
    same parts, and most A-B edges inside a shared community."""
    import pyarrow.parquet as pq

    from bench import typed_graphs

    monkeypatch.setattr(typed_graphs, "BLOCK_EDGES", 7_000)  # several blocks per relation
    spec = typed_graphs.TypedGraphSpec(a_nodes=2_000, b_nodes=3_000, ab_edges=20_000, aa_edges=2_000,
                                       test_edges=500, seed=3, community_a=200)
    summary = typed_graphs.generate(spec, tmp_path / "g")
    typed_graphs.generate(spec, tmp_path / "h")
    train = pq.read_table(tmp_path / "g" / "train").to_pandas()
    test = pq.read_table(tmp_path / "g" / "test").to_pandas()
    assert len(test) == 500 and set(test["rel"]) == {"ab"}
    for rel, count in (("ab", 20_000), ("aa", 2_000)):
        rows = train[train.rel == rel]
        edges = set(zip(rows.lhs, rows.rhs, strict=True))
        if rel == "ab":
            edges |= set(zip(test["lhs"], test["rhs"], strict=True))
        assert len(edges) == count, rel
    aa = train[train.rel == "aa"]
    assert (aa.lhs != aa.rhs).all() and train.lhs.max() < 2_000 and train[train.rel == "ab"].rhs.max() < 3_000
    trained_a = set(train.lhs) | set(aa.rhs)
    trained_b = set(train[train.rel == "ab"].rhs)
    assert all(a in trained_a for a in test.lhs) and all(b in trained_b for b in test.rhs)
    for part in sorted((tmp_path / "g" / "train").iterdir()):
        assert part.read_bytes() == (tmp_path / "h" / "train" / part.name).read_bytes()
    community_a, community_b = typed_graphs.community_of(spec)
    ab = train[train.rel == "ab"]
    inside = (community_a[ab.lhs.values] == community_b[ab.rhs.values]).mean()
    assert inside > 0.6  # 70% drawn inside (+ 3% by chance among 10 communities)
    assert summary["communities"] == 10 and not list(tmp_path.glob(".*"))
