"""The CSR of a dataset equals the adjacency lists built naively from its edge list."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import numpy as np
import pytest

import shardgraph.data.csr as csr_module
from shardgraph.data.csr import csr_directory, load_csr
from shardgraph.data.dataset import Dataset, attribute_file
from shardgraph.data.importer import import_edges
from shardgraph.errors import DatasetError
from shardgraph.utils.npy import payload_checksum
from tests.conftest import write_lines

CONFIG = """
[entities.user]
partitions = 3
[entities.item]
partitions = 3
[entities.tag]
partitions = 1
[[relations]]
name = "buys"
lhs = "user"
rhs = "item"
[[relations]]
name = "follows"
lhs = "user"
rhs = "user"
[[relations]]
name = "tagged"
lhs = "item"
rhs = "tag"
"""


def _typed_graph(tmp_path: Path, seed: int = 0) -> tuple[Path, list[tuple[str, str, str]]]:
    rng = random.Random(seed)
    relations = {"buys": ("u", "i"), "follows": ("u", "u"), "tagged": ("i", "t")}
    sizes = {"u": 40, "i": 25, "t": 6}
    edges = []
    for _ in range(400):
        rel = rng.choice(list(relations))
        lhs, rhs = relations[rel]
        edges.append((f"{lhs}{rng.randrange(sizes[lhs])}", rel, f"{rhs}{rng.randrange(sizes[rhs])}"))
    edges.append(("u1", "follows", "u1"))  # a self-loop
    edges.append(("u2", "buys", "i3"))
    edges.append(("u2", "buys", "i3"))  # a multi-edge
    edges += [("u2", "follows", "u3"), ("u3", "follows", "u2")]  # one head, two relations (undirected: rev)
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    path = write_lines(tmp_path / "g.tsv", ["\t".join(e) for e in edges])
    import_edges([path], tmp_path / "ds", config=config, progress=False)
    return tmp_path / "ds", edges


def _node_names(ds: Dataset) -> list[tuple[str, str]]:
    """(type, name) of every node id, built from the dictionaries in the documented order."""
    return [(t, name) for t in ds.entity_types for name in ds.all_entity_names(t)]


@pytest.mark.parametrize("directed", [False, True])
def test_csr_equals_the_naive_adjacency(tmp_path: Path, directed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csr_module, "_CHUNK_ROWS", 37)  # many chunks per bucket
    monkeypatch.setattr(csr_module, "_SORT_ARCS", 50)  # many sort blocks
    path, edges = _typed_graph(tmp_path)
    ds = Dataset(path)
    graph = load_csr(ds, directed=directed)
    names = _node_names(ds)
    type_of = {"buys": ("user", "item"), "follows": ("user", "user"), "tagged": ("item", "tag")}
    drawn = {(type_of[rel][0], lhs) for lhs, rel, _ in edges} | {(type_of[rel][1], rhs) for _, rel, rhs in edges}
    assert graph.num_nodes == len(names) == len(drawn)
    relation_id = {r.name: i for i, r in enumerate(ds.relations)}
    expected: dict[tuple[str, str], collections.Counter[tuple[tuple[str, str], int]]] = collections.defaultdict(
        collections.Counter)
    for lhs, rel, rhs in edges:
        lt, rt = type_of[rel]
        expected[(lt, lhs)][((rt, rhs), relation_id[rel])] += 1
        if not directed:
            expected[(rt, rhs)][((lt, lhs), relation_id[rel] + len(ds.relations))] += 1
    for node, key in enumerate(names):
        row = slice(graph.indptr[node], graph.indptr[node + 1])
        heads = np.asarray(graph.indices[row])
        got = collections.Counter((names[h], int(r)) for h, r in zip(heads, graph.arc_relation[row], strict=True))
        assert got == expected.get(key, collections.Counter()), key
        keys = heads.astype(np.int64) * 2 * len(ds.relations) + np.asarray(graph.arc_relation[row])
        assert np.all(np.diff(keys) >= 0), "neighbours are sorted by (head, relation)"
    assert graph.num_arcs == len(edges) * (1 if directed else 2)
    # node ids are per type, then the type's global ids
    types, global_ids = graph.entity_of(np.arange(graph.num_nodes))
    for node, (t, g) in enumerate(zip(types, global_ids, strict=True)):
        assert names[node] == (graph.type_names[t], ds.all_entity_names(graph.type_names[t])[g])
        assert graph.node_id(graph.type_names[t], g) == node


def test_csr_is_kept_and_rebuilt_when_the_edges_change(tmp_path: Path) -> None:
    path, _ = _typed_graph(tmp_path)
    ds = Dataset(path)
    load_csr(ds)
    meta = csr_directory(ds, "train", False) / "meta.json"
    built = meta.stat().st_mtime_ns
    load_csr(ds)
    assert meta.stat().st_mtime_ns == built, "a current CSR is reused"
    manifest = json.loads((path / "manifest.json").read_text())
    bucket = manifest["splits"]["train"]["buckets"][0]
    reordered = np.load(path / bucket["file"])[::-1].copy()  # the same edges in another order: new bytes
    np.save(path / bucket["file"], reordered)
    bucket["xxh3"] = payload_checksum(reordered)  # a consistent dataset (loads check checksums)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="stale"):
        load_csr(Dataset(path), build=False)
    load_csr(Dataset(path))
    assert json.loads(meta.read_text())["source"] != "", "rebuilt"
    assert meta.stat().st_mtime_ns != built


def test_weights_follow_their_arcs(tmp_path: Path) -> None:
    """A `weight` edge attribute (written here by hand, in the documented format) lands on both arcs."""
    path, _ = _typed_graph(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["edge_attributes"] = ["weight"]
    ds = Dataset(path)
    for bucket in manifest["splits"]["train"]["buckets"]:
        rows = np.asarray(ds.bucket_edges("train", bucket["lhs"], bucket["rhs"]))
        weight = (rows[:, 0] * 1000 + rows[:, 1] * 100 + rows[:, 2]).astype(np.float32) + bucket["lhs"] * 0.5
        file = attribute_file("train", bucket["lhs"], bucket["rhs"], "weight")
        np.save(path / file, weight)
        bucket["attributes"] = {"weight": {"file": file, "xxh3": payload_checksum(weight)}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    ds = Dataset(path)
    ds.verify()
    graph = load_csr(ds)
    assert graph.weights is not None
    expected: collections.Counter[tuple[int, int, float]] = collections.Counter()
    num_relations = len(ds.relations)
    global_edges = ds.global_edges("train")
    weights = np.concatenate([np.asarray(ds.bucket_attribute("train", b.lhs, b.rhs, "weight"))
                              for b in ds.buckets("train")])
    rel_types = [(list(ds.entity_types).index(r.lhs), list(ds.entity_types).index(r.rhs)) for r in ds.relations]
    for (lhs, rel, rhs), w in zip(global_edges.tolist(), weights.tolist(), strict=True):
        tail = graph.type_offsets[rel_types[rel][0]] + lhs
        head = graph.type_offsets[rel_types[rel][1]] + rhs
        expected[(int(tail), int(head), w)] += 1
        expected[(int(head), int(tail), w)] += 1
    got: collections.Counter[tuple[int, int, float]] = collections.Counter()
    for node in range(graph.num_nodes):
        for arc in range(graph.indptr[node], graph.indptr[node + 1]):
            got[(node, int(graph.indices[arc]), float(graph.weights[arc]))] += 1
    assert got == expected
    assert set(np.unique(graph.arc_relation)) <= set(range(2 * num_relations))
    # a damaged attribute file is caught by verify
    file = path / ds.buckets("train")[0].attributes["weight"][0]
    values = np.load(file)
    values[0] += 1
    np.save(file, values)
    with pytest.raises(DatasetError, match="checksum"):
        Dataset(path).verify()
