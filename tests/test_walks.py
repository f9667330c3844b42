"""Random walks, skip-gram pairs and node classification, checked against naive computations."""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import chisquare

from shardgraph.config import load_config
from shardgraph.data.csr import load_csr
from shardgraph.data.dataset import Dataset
from shardgraph.data.importer import import_edges
from shardgraph.errors import ConfigError, InputError
from shardgraph.walks.classify import evaluate_nodes, read_labels
from shardgraph.walks.kernels import walk_kernels
from shardgraph.walks.skipgram import window_pairs
from shardgraph.walks.walker import Walker
from tests.conftest import require_built, write_lines

TYPED_CONFIG = """
[entities.user]
partitions = 2
[entities.article]
partitions = 1
[entities.tag]
partitions = 1
[[relations]]
name = "clicks"
lhs = "user"
rhs = "article"
[[relations]]
name = "follows"
lhs = "user"
rhs = "user"
[[relations]]
name = "tagged"
lhs = "article"
rhs = "tag"
"""


@dataclass(frozen=True)
class HandGraph:
    """A CSR built naively from an undirected edge list (the test's own, not shardgraph's)."""

    indptr: np.ndarray
    indices: np.ndarray
    arc_relation: np.ndarray
    weights: np.ndarray | None
    type_offsets: np.ndarray


def hand_graph(edges: list[tuple[int, int]], n: int, weights: list[float] | None = None) -> HandGraph:
    rows: list[list[tuple[int, int, float]]] = [[] for _ in range(n)]
    for k, (a, b) in enumerate(edges):
        w = 1.0 if weights is None else weights[k]
        rows[a].append((b, 0, w))
        rows[b].append((a, 1, w))
    for row in rows:
        row.sort()
    flat = [arc for row in rows for arc in row]
    return HandGraph(np.array([0, *np.cumsum([len(r) for r in rows])], dtype=np.int64),
                     np.array([a[0] for a in flat], dtype=np.int32), np.array([a[1] for a in flat], dtype=np.int32),
                     None if weights is None else np.array([a[2] for a in flat], dtype=np.float32),
                     np.array([0, n], dtype=np.int64))


def random_graph(n: int, m: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    edges = set()
    while len(edges) < m:
        a, b = rng.randrange(n), rng.randrange(n)
        if a != b:
            edges.add((min(a, b), max(a, b)))
    return sorted(edges)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("p", "q"), [(1.0, 1.0), (0.25, 4.0), (4.0, 0.5)])
def test_compiled_walks_equal_the_python_reference_on_any_thread_count(weighted: bool, p: float, q: float) -> None:
    require_built("shardgraph._walks", walk_kernels() is not None)
    edges = random_graph(60, 240, seed=1)
    rng = np.random.default_rng(0)
    graph = hand_graph(edges, 60, rng.uniform(0.1, 2.0, len(edges)).tolist() if weighted else None)
    starts = np.arange(60)
    reference = Walker(graph, walk_length=15, p=p, q=q, seed=7, compiled=False).walk(starts, starts + 1000)
    for threads in (1, 3):
        compiled = Walker(graph, walk_length=15, p=p, q=q, seed=7, threads=threads, compiled=True).walk(
            starts, starts + 1000)
        np.testing.assert_array_equal(compiled.walks, reference.walks)
        np.testing.assert_array_equal(compiled.lengths, reference.lengths)


def test_walks_do_not_depend_on_the_block_size() -> None:
    graph = hand_graph(random_graph(50, 150, seed=2), 50)
    whole = [b.walks for b in Walker(graph, walk_length=10, p=0.5, q=2, seed=3, block_walks=1000).blocks(3)]
    small = [b.walks for b in Walker(graph, walk_length=10, p=0.5, q=2, seed=3, block_walks=7).blocks(3)]
    np.testing.assert_array_equal(np.concatenate(whole), np.concatenate(small))
    other_seed = np.concatenate([b.walks for b in Walker(graph, walk_length=10, p=0.5, q=2, seed=4).blocks(3)])
    assert not np.array_equal(np.concatenate(whole), other_seed)


@pytest.mark.parametrize(("p", "q", "weighted"), [(1.0, 1.0, False), (0.25, 4.0, False), (4.0, 0.25, False),
                                                  (2.0, 0.5, True)])
def test_second_step_frequencies_follow_the_node2vec_formula(p: float, q: float, weighted: bool) -> None:
    # node 0 -- 1 is the first step; node 1's neighbours: 0 (back), 2, 3 (also neighbours of 0), 4, 5, 6 (not)
    edges = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (4, 5), (6, 7)]
    weights = [1.0, 1.0, 1.0, 3.0, 0.5, 1.0, 2.0, 1.0, 1.0, 1.0] if weighted else None
    graph = hand_graph(edges, 8, weights)
    adjacency: dict[int, dict[int, float]] = collections.defaultdict(dict)
    for k, (a, b) in enumerate(edges):
        adjacency[a][b] = adjacency[b][a] = 1.0 if weights is None else weights[k]
    walks = 40_000
    block = Walker(graph, walk_length=3, p=p, q=q, seed=11).walk(np.zeros(walks, dtype=np.int64),
                                                                   np.arange(walks))
    assert (block.walks[:, 1] >= 1).all() and (block.walks[:, 1] <= 3).all()
    via_one = block.walks[block.walks[:, 1] == 1, 2]
    neighbours = sorted(adjacency[1])
    bias = [adjacency[1][x] * (1 / p if x == 0 else 1.0 if x in adjacency[0] else 1 / q) for x in neighbours]
    expected = np.array(bias) / sum(bias) * len(via_one)
    observed = np.array([(via_one == x).sum() for x in neighbours])
    assert observed.sum() == len(via_one)
    assert chisquare(observed, expected).pvalue > 1e-3, (observed, expected)


def test_first_step_frequencies_follow_the_weights() -> None:
    graph = hand_graph([(0, 1), (0, 2), (0, 3)], 4, [1.0, 2.0, 5.0])
    block = Walker(graph, walk_length=2, seed=5).walk(np.zeros(30_000, dtype=np.int64), np.arange(30_000))
    observed = np.bincount(block.walks[:, 1], minlength=4)[1:]
    assert chisquare(observed, np.array([1, 2, 5]) / 8 * 30_000).pvalue > 1e-3


def typed_dataset(tmp_path: Path) -> tuple[Path, list[tuple[str, str, str]]]:
    rng = random.Random(0)
    edges = []
    for _ in range(300):
        edges.append((f"u{rng.randrange(40)}", "clicks", f"a{rng.randrange(25)}"))
        edges.append((f"u{rng.randrange(40)}", "follows", f"u{rng.randrange(40)}"))
    edges += [(f"a{i}", "tagged", f"t{i % 5}") for i in range(25)]
    config = tmp_path / "typed.toml"
    config.write_text(TYPED_CONFIG)
    path = write_lines(tmp_path / "typed.tsv", ["\t".join(e) for e in edges])
    import_edges([path], tmp_path / "typed", config=config, progress=False)
    return tmp_path / "typed", edges


@pytest.mark.parametrize(("text", "types", "steps", "min_length"), [
    ("user-clicks-article-tagged-tag-tagged_rev-article-clicks_rev-user", ["user", "article", "tag", "article"],
     [("clicks", False), ("tagged", False), ("tagged", True), ("clicks", True)], 5),
    # follows joins users to users both ways: only the arcs along the relation may be taken
    ("user-follows-user", ["user"], [("follows", False)], 1),
    ("user-follows_rev-user", ["user"], [("follows", True)], 1),
])
def test_metapath_walks_never_leave_the_metapath(tmp_path: Path, text: str, types: list[str],
                                                 steps: list[tuple[str, bool]], min_length: int) -> None:
    from shardgraph.walks.corpus import metapaths_of

    dataset_path, edges = typed_dataset(tmp_path)
    dataset = Dataset(dataset_path)
    graph = load_csr(dataset)
    names = {t: dataset.all_entity_names(t) for t in dataset.entity_types}
    node_name = [(t, name) for t in dataset.entity_types for name in names[t]]
    edge_set = {(lhs, rel, rhs) for lhs, rel, rhs in edges}
    config = load_config(None, ["walks.method=metapath2vec", f"walks.metapaths=[\"{text}\"]"])
    metapath = metapaths_of(config, dataset)[0]
    walker = Walker(graph, walk_length=13, metapaths=[metapath], seed=1)
    walked = steps_taken = 0
    for block in walker.blocks(2):
        for walk, length in zip(block.walks, block.lengths, strict=True):
            assert length >= min_length
            for i in range(length):
                assert node_name[walk[i]][0] == types[i % len(types)]
            for i in range(length - 1):
                relation, backwards = steps[i % len(steps)]
                a, b = node_name[walk[i]][1], node_name[walk[i + 1]][1]
                assert ((b, relation, a) if backwards else (a, relation, b)) in edge_set
                steps_taken += 1
            walked += 1
    ends = {"clicks": ("user", "article"), "follows": ("user", "user"), "tagged": ("article", "tag")}
    starters = {node for lhs, rel, rhs in edges for node, entity_type in zip((lhs, rhs), ends[rel], strict=True)
                if entity_type == types[0]}
    assert walked == 2 * len(starters)  # every node of the first type with a neighbour starts walks
    assert steps_taken > walked


@pytest.mark.parametrize("metapath, message", [
    ("user-clicks-movie-clicks_rev-user", "entity type 'movie'"),
    ("user-likes-article-clicks_rev-user", "relation 'likes'"),
    ("user-tagged-article-clicks_rev-user", "relation 'tagged' goes article -> tag"),
    ("user-clicks-article", "must end on the type it starts with"),
])
def test_bad_metapaths_name_the_key(tmp_path: Path, metapath: str, message: str) -> None:
    from shardgraph.walks.corpus import metapaths_of

    dataset = Dataset(typed_dataset(tmp_path)[0])
    config = load_config(None, ["walks.method=metapath2vec", f"walks.metapaths=[\"{metapath}\"]"])
    with pytest.raises(ConfigError, match=message) as info:
        metapaths_of(config, dataset)
    assert "walks.metapaths[0]" in str(info.value)


@pytest.mark.parametrize("override, message", [
    ("walks.p=0", "walks.p must be > 0"), ("walks.q=-1", "walks.q must be > 0"),
    ("walks.walk_length=1", "walks.walk_length must be >= 2"), ("walks.window=0", "walks.window must be >= 1"),
    ("walks.method=walktrap", "walks.method must be one of"),
])
def test_bad_walk_settings_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["walks.method=node2vec", override])


def naive_pairs(walk: list[int], reach: list[int]) -> collections.Counter[tuple[int, int]]:
    pairs: collections.Counter[tuple[int, int]] = collections.Counter()
    for i, centre in enumerate(walk):
        for j, context in enumerate(walk):
            if i != j and abs(i - j) <= reach[i]:
                pairs[(centre, context)] += 1
    return pairs


def test_window_pairs_are_the_expected_multiset() -> None:
    walk = [5, 3, 5, 8, 2, 9]
    walks = np.array([[*walk, -1, -1], [4, 1, 4, -1, -1, -1, -1, -1]], dtype=np.int64)
    lengths = np.array([6, 3])
    centre, context = window_pairs(walks, lengths, 2, False, np.random.default_rng(0))
    got = collections.Counter(zip(centre.tolist(), context.tolist(), strict=True))
    assert got == naive_pairs(walk, [2] * 6) + naive_pairs([4, 1, 4], [2] * 3)


@pytest.mark.parametrize("compiled", [True, False])
def test_shrunk_window_draws_a_window_per_centre(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every centre draws one reach r in 1..window and pairs with exactly the nodes within r of it, on both
    sides; the reaches are uniform. Every node occurs once, so a pair tells the positions it joins."""
    from shardgraph.walks import skipgram

    if compiled:
        require_built("shardgraph._walks", skipgram.walk_kernels() is not None)
    else:
        monkeypatch.setattr(skipgram, "walk_kernels", lambda: None)
    walks = np.arange(200 * 30).reshape(200, 30)
    lengths = np.full(200, 30)
    lengths[:50] = 17  # shorter walks: the windows stop at the ends
    walks[:50, 17:] = -1
    centre, context = window_pairs(walks, lengths, 5, True, np.random.default_rng(1))
    contexts: dict[int, set[int]] = collections.defaultdict(set)
    for c, x in zip(centre.tolist(), context.tolist(), strict=True):
        contexts[c].add(x)
    reaches = []
    for w in range(200):
        for i in range(int(lengths[w])):
            got = contexts[int(walks[w, i])]
            reach = max(abs(x - int(walks[w, i])) for x in got)
            window = range(max(0, i - reach), min(int(lengths[w]), i + reach + 1))
            expected = {int(walks[w, j]) for j in window if j != i}
            assert got == expected
            if min(i, int(lengths[w]) - 1 - i) >= 5:  # no end within the window: the draw itself
                reaches.append(reach)
    counts = np.bincount(reaches, minlength=6)[1:]
    assert len(counts) == 5 and counts.min() > 0.8 * len(reaches) / 5 and counts.max() < 1.2 * len(reaches) / 5


def test_label_files_with_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    good = write_lines(tmp_path / "ok.csv", ["# node,label", "a,x", "a,y", "b z w"])
    assert read_labels(good) == {"a": ["x", "y"], "b": ["z", "w"]}
    bad = write_lines(tmp_path / "bad.csv", ["a,x", "b"])
    with pytest.raises(InputError, match=r"bad\.csv, line 2: expected a node id and at least one label"):
        read_labels(bad)
    with pytest.raises(InputError, match="does not exist"):
        read_labels(tmp_path / "missing.csv")


def planted_communities(tmp_path: Path, communities: int = 4, size: int = 50) -> tuple[Path, Path]:
    rng = random.Random(0)
    n = communities * size
    lines = set()
    for a in range(n):
        for _ in range(6):
            same = rng.random() < 0.9
            b = (a // size) * size + rng.randrange(size) if same else rng.randrange(n)
            if a != b:
                lines.add(f"n{min(a, b)},n{max(a, b)}")
    edges = write_lines(tmp_path / "planted.csv", [*sorted(lines), "lonely,loner"])
    labels = write_lines(tmp_path / "labels.csv", [f"n{a},c{a // size}" for a in range(n)] + ["ghost,c0"])
    return edges, labels


def test_planted_communities_are_classified_far_above_chance(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from shardgraph.training.trainer import train

    edges, labels = planted_communities(tmp_path)
    import_edges([edges], tmp_path / "planted", progress=False)
    config = load_config(Path(__file__).parent.parent / "configs" / "node2vec.toml", [
        f"data.dataset={tmp_path / 'planted'}", "walks.walks_per_node=4", "walks.walk_length=20", "walks.window=4",
        "model.dimension=16", "training.epochs=2", "training.workers=1"])
    with caplog.at_level(logging.INFO, logger="shardgraph"):
        run = train(config, run_dir=tmp_path / "run", progress=False)
    corpus = Dataset(tmp_path / "run" / "walks")
    stats = corpus.manifest["walk_stats"]
    assert stats["walks"] == 4 * 202 and stats["isolated_nodes"] == 0
    assert run.edges == 2 * stats["pairs"]
    result = evaluate_nodes(run.path, labels, train_fractions=[0.5], repeats=3)
    assert result["unknown_ids"] == 1 and result["unknown_examples"] == ["ghost"]
    assert result["labelled_nodes"] == 200
    assert result["results"][0]["macro_f1"] > 0.8  # chance: 0.25
    # the run is an ordinary run: a second train with --resume reuses the walks
    with caplog.at_level(logging.INFO, logger="shardgraph"):
        train(config, run_dir=tmp_path / "run", resume=True, progress=False)
    assert any("reusing the walks" in r.getMessage() for r in caplog.records)


def test_isolated_nodes_get_no_walks_and_are_counted() -> None:
    graph = hand_graph([(0, 1), (1, 2)], 5)
    walker = Walker(graph, walk_length=5, seed=0)
    assert walker.isolated == 2
    starts = np.concatenate([b.walks[:, 0] for b in walker.blocks(2)])
    assert sorted(starts.tolist()) == [0, 0, 1, 1, 2, 2]


def test_forward_pairs_are_the_pairs_with_the_context_after_the_centre() -> None:
    walk = [5, 3, 5, 8, 2, 9]
    centre, context = window_pairs(np.array([walk]), np.array([6]), 3, False, np.random.default_rng(0),
                                   both_directions=False)
    expected = collections.Counter((walk[i], walk[j]) for i in range(6) for j in range(i + 1, min(6, i + 4)))
    assert collections.Counter(zip(centre.tolist(), context.tolist(), strict=True)) == expected


def test_subsampling_keeps_frequent_nodes_as_word2vec_does() -> None:
    from shardgraph.walks.skipgram import keep_probabilities, subsample

    counts = np.array([0, 1, 10, 100_000])
    keep = keep_probabilities(counts, 1e-3)
    threshold = 1e-3 * counts.sum()
    assert keep[0] == keep[1] == keep[2] == 1.0
    assert keep[3] == pytest.approx((np.sqrt(100_000 / threshold) + 1) * threshold / 100_000)
    walks = np.array([[3, 1, 3, 2, 3, -1], [3, 3, 3, 3, 3, 3]])
    lengths = np.array([5, 6])
    keep_half = np.array([1.0, 1.0, 1.0, 0.5])
    out, new_lengths = subsample(walks, lengths, keep_half, np.random.default_rng(0))
    draws = np.random.default_rng(0).random(walks.shape)
    for row in range(2):  # naive: keep node v where the row's draw < keep[v], in order
        expected = [v for v, u in zip(walks[row, : lengths[row]], draws[row], strict=False) if u < keep_half[v]]
        assert out[row, : new_lengths[row]].tolist() == expected
        assert (out[row, new_lengths[row] :] == -1).all()


def test_walks_command_writes_the_corpus_that_train_would(tmp_path: Path) -> None:
    from shardgraph.cli import main
    from shardgraph.training.trainer import train

    edges, _ = planted_communities(tmp_path, communities=2, size=20)
    import_edges([edges], tmp_path / "g", progress=False)
    config_path = Path(__file__).parent.parent / "configs" / "deepwalk.toml"
    overrides = ["walks.walks_per_node=2", "walks.walk_length=10", "model.dimension=8", "training.workers=1"]
    assert main(["walks", str(config_path), "--dataset", str(tmp_path / "g"), "--out", str(tmp_path / "corpus"),
                 "--no-progress", *(x for o in overrides for x in ("-p", o))]) == 0
    corpus = Dataset(tmp_path / "corpus")
    config = load_config(config_path, [*overrides, f"data.dataset={tmp_path / 'g'}"])
    train(config, run_dir=tmp_path / "run", progress=False)
    built = Dataset(tmp_path / "run" / "walks")
    assert corpus.manifest["walk_stats"]["pairs"] == built.manifest["walk_stats"]["pairs"] > 0
    np.testing.assert_array_equal(corpus.bucket_edges("train", 0, 0), built.bucket_edges("train", 0, 0))
    # a walk corpus trains as it is (distributed trainers get it this way)
    trained = train(config, dataset=tmp_path / "corpus", run_dir=tmp_path / "run2", progress=False)
    assert trained.edges == corpus.edge_count("train")


def forward_pairs(blocks: Iterable[Any], window: int) -> Iterator[tuple[int, int]]:
    """(centre, context) node pairs of the walks, context up to `window` steps after the centre (no
    shrunk window), counted naively."""
    for block in blocks:
        for walk, length in zip(block.walks.tolist(), block.lengths.tolist(), strict=True):
            for i in range(length):
                for j in range(i + 1, min(length, i + window + 1)):
                    yield walk[i], walk[j]


@pytest.mark.parametrize("sample", [0.0, 1.0])
def test_the_corpus_holds_the_window_pairs_of_the_walks_in_the_right_buckets(tmp_path: Path, sample: float) -> None:
    """sample = 1: subsampling that keeps every node, so that the pairs come from walks spilled by the counting
    pass and read back (not walked again); they must be the same walks."""
    from shardgraph.walks.corpus import build_walk_corpus, make_walker

    dataset = Dataset(typed_dataset(tmp_path)[0])  # users in 2 partitions, articles and tags in 1
    config = load_config(None, ["walks.method=metapath2vec", "walks.metapaths=[\"user-article-tag-article-user\"]",
                                "walks.walks_per_node=2", "walks.walk_length=9", "walks.window=3",
                                "walks.shrink_window=false", f"walks.sample={sample}", "walks.block_walks=16"])
    corpus = build_walk_corpus(config, dataset, tmp_path / "corpus", progress=False)
    names = [(t, name) for t in dataset.entity_types for name in dataset.all_entity_names(t)]
    expected = collections.Counter((names[a], names[b])
                                   for a, b in forward_pairs(make_walker(config, dataset).blocks(2), window=3))
    got: collections.Counter[tuple[tuple[str, str], tuple[str, str]]] = collections.Counter()
    relations = {i: (r.lhs, r.rhs) for i, r in enumerate(corpus.relations)}

    def name(entity_type: str, bucket_side: int, local: int) -> tuple[str, str]:
        partition = bucket_side if corpus.partitions_of(entity_type) > 1 else 0
        return entity_type, corpus.entity_names(entity_type, partition)[local]

    for info, edges in corpus.iter_edges("train"):
        for lhs, rel, rhs in np.asarray(edges).tolist():
            lhs_type, rhs_type = relations[rel]
            got[(name(lhs_type, info.lhs, lhs), name(rhs_type, info.rhs, rhs))] += 1
    assert got == expected
    assert corpus.num_partitions == 2 and len(corpus.buckets("train")) > 1


def test_the_one_table_corpus_holds_the_window_pairs_of_every_block(tmp_path: Path) -> None:
    """One entity type in one partition: the compiled walker writes each block's rows into one reused
    buffer, so the bucket writer must not keep the buffer itself while it holds rows back."""
    from shardgraph.walks.corpus import build_walk_corpus, make_walker

    require_built("shardgraph._walks", walk_kernels() is not None)
    edges, _ = planted_communities(tmp_path, communities=2, size=30)
    import_edges([edges], tmp_path / "g", progress=False)
    dataset = Dataset(tmp_path / "g")
    config = load_config(None, ["walks.method=deepwalk", "walks.walks_per_node=3", "walks.walk_length=12",
                                "walks.window=3", "walks.shrink_window=false", "walks.sample=0",
                                "walks.block_walks=16"])
    corpus = build_walk_corpus(config, dataset, tmp_path / "corpus", progress=False)
    blocks = list(make_walker(config, dataset).blocks(3))
    assert len(blocks) > 5
    expected = collections.Counter(forward_pairs(blocks, window=3))
    got = collections.Counter(map(tuple, np.asarray(corpus.bucket_edges("train", 0, 0))[:, [0, 2]].tolist()))
    assert got == expected
