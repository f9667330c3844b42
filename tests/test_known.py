"""The out-of-core index of known edges equals a set of the dataset's edges built by name."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

import shardgraph.data.known as known_module
from shardgraph.data.dataset import Dataset
from shardgraph.data.importer import import_edges
from shardgraph.data.known import known_directory, load_known_edges
from tests.test_csr import _typed_graph


def _naive(dataset: Dataset, predict: str) -> dict[tuple[str, int, int], set[int]]:
    """(known type, known global id, relation) -> other ends' global ids, from the edge lists."""
    out: dict[tuple[str, int, int], set[int]] = collections.defaultdict(set)
    for split in ("train", "valid", "test"):
        for lhs, rel, rhs in dataset.global_edges(split).tolist():
            relation = dataset.relations[rel]
            if predict == "rhs":
                out[(relation.lhs, lhs, rel)].add(rhs)
            else:
                out[(relation.rhs, rhs, rel)].add(lhs)
    return out


def _check(dataset: Dataset) -> None:
    rng = np.random.default_rng(0)
    for predict in ("rhs", "lhs"):
        expected = _naive(dataset, predict)
        index = load_known_edges(dataset, predict)
        # every (known id, relation) of the right type, plus pairs with no edges
        queries = []
        for rel, relation in enumerate(dataset.relations):
            known_type = relation.lhs if predict == "rhs" else relation.rhs
            queries += [(known_type, g, rel) for g in range(dataset.entity_types[known_type].count)]
        order = rng.permutation(len(queries))
        queries = [queries[i] for i in order]
        rows, other = index.lookup(np.array([q[1] for q in queries]), np.array([q[2] for q in queries]))
        assert np.all(np.diff(rows) >= 0)
        got: dict[int, list[int]] = collections.defaultdict(list)
        for row, o in zip(rows.tolist(), other.tolist(), strict=True):
            got[row].append(o)
        for row, query in enumerate(queries):
            assert sorted(got.get(row, [])) == sorted(expected.get(query, set())) or (
                # multi-edges are listed once per edge
                set(got.get(row, [])) == expected.get(query, set())), (predict, query)
        # restricted to an id range [lo, hi): exactly the naive set's ids in it
        count = max(t.count for t in dataset.entity_types.values())
        for lo, hi in ((0, count // 3), (count // 3, count // 3 + 7), (count // 2, count), (5, 5)):
            rows, other = index.lookup(np.array([q[1] for q in queries]), np.array([q[2] for q in queries]),
                                       lo, hi)
            assert np.all(np.diff(rows) >= 0)
            ranged: dict[int, set[int]] = collections.defaultdict(set)
            for row, o in zip(rows.tolist(), other.tolist(), strict=True):
                ranged[row].add(o)
            for row, query in enumerate(queries):
                assert ranged.get(row, set()) == {o for o in expected.get(query, set()) if lo <= o < hi}, \
                    (predict, query, lo, hi)


def test_known_edges_of_a_typed_graph(tmp_path: Path) -> None:
    path, _ = _typed_graph(tmp_path)
    _check(Dataset(path))


def test_known_edges_of_umls_in_four_partitions(tmp_path: Path, umls: dict[str, Path]) -> None:
    import_edges([umls["train"]], tmp_path / "ds", valid=[umls["valid"]], test=[umls["test"]], partitions=4,
                 progress=False)
    dataset = Dataset(tmp_path / "ds")
    _check(dataset)
    # ids beyond the dataset (entities added after training, embed-new) have no known edges
    index = load_known_edges(dataset, "rhs")
    count = dataset.entity_types["entity"].count
    rows, _ = index.lookup(np.array([count, count + 5, 0]), np.array([0, 1, 0]))
    assert set(rows.tolist()) <= {2}
    # kept, and rebuilt only when the edges change
    meta = known_directory(dataset) / "meta.json"
    built = meta.stat().st_mtime_ns
    load_known_edges(Dataset(tmp_path / "ds"), "lhs")
    assert meta.stat().st_mtime_ns == built


def test_building_reads_one_partition_at_a_time(tmp_path: Path, umls: dict[str, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory of the build: the largest array sorted at once holds the edges of one known partition."""
    import_edges([umls["train"]], tmp_path / "ds", valid=[umls["valid"]], test=[umls["test"]], partitions=4,
                 progress=False)
    dataset = Dataset(tmp_path / "ds")
    sizes: list[int] = []
    original = known_module._distinct_pairs

    def recording(key: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes.append(len(key))
        return original(key, other)

    monkeypatch.setattr(known_module, "_distinct_pairs", recording)
    load_known_edges(dataset, "rhs")
    total = sum(dataset.edge_count(split) for split in ("train", "valid", "test"))
    assert len(sizes) == 8 and sum(sizes) == 2 * total and max(sizes) < total / 2


def test_the_build_has_a_progress_bar_over_every_edge_of_both_directions(
        tmp_path: Path, umls: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import RecordingBar

    import_edges([umls["train"]], tmp_path / "ds", valid=[umls["valid"]], test=[umls["test"]], partitions=3,
                 progress=False)
    dataset = Dataset(tmp_path / "ds")
    RecordingBar.made.clear()
    monkeypatch.setattr(known_module, "tqdm", RecordingBar)
    load_known_edges(dataset, "lhs")
    (bar,) = RecordingBar.made
    edges = sum(dataset.edge_count(split) for split in ("train", "valid", "test"))
    assert bar.total == bar.n == 2 * edges
    assert bar.disable is None  # tqdm's own choice: shown on a terminal
    # `eval --json` evaluates without progress: the build it triggers shows no bar either
    import shutil

    from shardgraph.eval.evaluate import Evaluator

    shutil.rmtree(known_directory(dataset))
    RecordingBar.made.clear()
    evaluator = Evaluator.__new__(Evaluator)
    evaluator.run, evaluator.progress, evaluator._known = type("Run", (), {"dataset": dataset})(), False, {}
    evaluator._known_index("rhs")
    (bar,) = RecordingBar.made
    assert bar.disable is True and bar.n == 2 * edges


def test_files_are_int32_csr_and_int64_reads_the_same(tmp_path: Path, umls: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import_edges([umls["train"]], tmp_path / "ds", valid=[umls["valid"]], test=[umls["test"]], partitions=2,
                 progress=False)
    dataset = Dataset(tmp_path / "ds")
    load_known_edges(dataset, "rhs")
    directory = known_directory(dataset) / "rhs"
    distinct = {(int(lhs), int(rel), int(rhs)) for split in ("train", "valid", "test")
                for lhs, rel, rhs in dataset.global_edges(split).tolist()}
    keys = [np.load(directory / f"part_{p}.keys.npy") for p in range(2)]
    other = [np.load(directory / f"part_{p}.other.npy") for p in range(2)]
    assert all(a.dtype == np.int32 for a in keys + other)
    assert sum(map(len, other)) == len(distinct)  # one id per distinct edge, multi-edges once
    assert sum(map(len, keys)) == len({(lhs, rel) for lhs, rel, _ in distinct})
    # int64 files (ids or offsets past 2^31) give the same answers
    monkeypatch.setattr(known_module, "_narrow", lambda values: values)
    (known_directory(dataset) / "meta.json").unlink()
    _check(Dataset(tmp_path / "ds"))
    assert np.load(directory / "part_0.other.npy").dtype == np.int64


def test_distinct_pairs_without_room_for_one_int64_key() -> None:
    rng = np.random.default_rng(3)
    key = rng.integers(0, 50, size=2000) * 2**40  # key * (max other + 1) overflows int64: the lexsort path
    other = rng.integers(0, 2**30, size=2000)
    key, other = np.concatenate([key, key[:300]]), np.concatenate([other, other[:300]])
    got_key, got_other = known_module._distinct_pairs(key, other)
    expected = sorted(set(zip(key.tolist(), other.tolist(), strict=True)))
    assert list(zip(got_key.tolist(), got_other.tolist(), strict=True)) == expected
    small_key, small_other = known_module._distinct_pairs(key // 2**40, other)
    assert list(zip(small_key.tolist(), small_other.tolist(), strict=True)) == [(k // 2**40, o) for k, o in expected]


@pytest.mark.parametrize("n, high", [(0, 5), (1, 5), (2, 1), (5000, 50), (5000, 2**40)])
def test_unique_sorted_is_the_sorted_set(n: int, high: int) -> None:
    """The known-edge index and the evaluation sort-and-compare instead of np.unique (a hash set in numpy
    2.4, 15x slower on 19M ids): the same values as Python's set, sorted, negatives included."""
    from shardgraph.utils.arrays import unique_sorted

    values = np.random.default_rng(n).integers(-high, high, n)
    got = unique_sorted(values)
    assert got.tolist() == sorted(set(values.tolist()))
    assert got.dtype == values.dtype
