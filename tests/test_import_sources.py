"""Edges straight from Python objects (pandas, pyarrow, NetworkX, SciPy, PyTorch Geometric, numpy),
and trained embeddings back out as pandas, PyG and gensim objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

import shardgraph
from shardgraph.config import load_config
from shardgraph.data.dataset import Dataset
from shardgraph.errors import InputError
from shardgraph.training.trainer import train

EDGES = [("a", "r", "b"), ("b", "s", "c"), ("c", "r", "a"), ("d", "r", "b"), ("a", "s", "d")]


def typed_edges(path: Path) -> set[tuple[str, str, str, str, str]]:
    """(lhs type, lhs id, relation, rhs type, rhs id) of every train edge of a dataset, by name."""
    ds = Dataset(path)
    names = {t: ds.all_entity_names(t) for t in ds.entity_types}
    out = set()
    for a, r, b in ds.global_edges("train").tolist():
        rel = ds.relations[r]
        out.add((rel.lhs, names[rel.lhs][a], rel.name, rel.rhs, names[rel.rhs][b]))
    return out


def edges_of(path: Path) -> set[tuple[str, str, str]]:
    return {(a, r, b) for _, a, r, _, b in typed_edges(path)}


def test_pandas_dataframe_in_blocks(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(EDGES, columns=["source", "relation", "target"])
    summary = shardgraph.import_edges(df, tmp_path / "d", progress=False)
    assert summary.entities == 4 and summary.relations == 2 and summary.edges["train"] == 5
    assert edges_of(tmp_path / "d") == set(EDGES)
    # streamed a block at a time: same graph with blocks of two rows
    from shardgraph.data.sources import ObjectReader

    blocks = list(ObjectReader(df, block_rows=2))
    assert [len(b) for b in blocks] == [2, 2, 1]


def test_arrow_table_and_batch_iterator(tmp_path: Path) -> None:
    table = pa.table({"lhs": [e[0] for e in EDGES], "rel": [e[1] for e in EDGES], "rhs": [e[2] for e in EDGES],
                      "weight": pa.array([0.5, 1, 2, 3, 4], pa.float64())})
    shardgraph.import_edges(table, tmp_path / "d", progress=False)
    assert edges_of(tmp_path / "d") == set(EDGES)
    ds = Dataset(tmp_path / "d")
    assert ds.edge_attributes == ("weight",)
    assert sorted(ds.bucket_attribute("train", 0, 0, "weight").tolist()) == [0.5, 1, 2, 3, 4]

    def batches():  # a generator: read once, never materialised
        yield from table.to_batches(max_chunksize=2)

    summary = shardgraph.import_edges(batches(), tmp_path / "e", progress=False)
    assert summary.edges["train"] == 5 and edges_of(tmp_path / "e") == set(EDGES)


def test_networkx_graph_with_relation_attribute(tmp_path: Path) -> None:
    nx = pytest.importorskip("networkx")
    graph = nx.MultiDiGraph()
    for a, r, b in EDGES:
        graph.add_edge(a, b, kind=r, weight=2.0)
    summary = shardgraph.import_edges(graph, tmp_path / "d", relation="kind", progress=False)
    assert summary.edges["train"] == graph.number_of_edges() == 5
    assert summary.entities == graph.number_of_nodes() == 4
    assert edges_of(tmp_path / "d") == set(EDGES)
    assert Dataset(tmp_path / "d").edge_attributes == ("weight",)
    karate = nx.karate_club_graph()
    summary = shardgraph.import_edges(karate, tmp_path / "k", progress=False)
    assert summary.entities == 34 and summary.edges["train"] == karate.number_of_edges() == 78
    with pytest.raises(InputError, match="no attribute 'nope'"):
        shardgraph.import_edges(graph, tmp_path / "x", relation="nope", progress=False)


def test_scipy_sparse_matrix(tmp_path: Path) -> None:
    sparse = pytest.importorskip("scipy.sparse")
    rows, cols, values = np.array([0, 0, 1, 3]), np.array([1, 2, 2, 0]), np.array([1.0, 0.5, 2.0, 4.0])
    matrix = sparse.csr_matrix((values, (rows, cols)), shape=(5, 5))
    summary = shardgraph.import_edges(matrix, tmp_path / "d", progress=False)
    assert summary.edges["train"] == matrix.nnz == 4 and summary.entities == 4  # node 4 has no edge
    assert edges_of(tmp_path / "d") == {(str(a), "edge", str(b)) for a, b in zip(rows, cols, strict=True)}
    ds = Dataset(tmp_path / "d")
    names = ds.all_entity_names("entity")
    got = {(names[a], names[b]): w for (a, _, b), w in zip(ds.bucket_edges("train", 0, 0).tolist(),
                                                             ds.bucket_attribute("train", 0, 0, "weight").tolist(),
                                                             strict=True)}
    assert got == {(str(a), str(b)): w for a, b, w in zip(rows, cols, values, strict=True)}


def test_numpy_arrays(tmp_path: Path) -> None:
    pairs = np.array([[0, 1], [1, 2], [2, 0], [5, 1]])
    summary = shardgraph.import_edges(pairs, tmp_path / "d", progress=False)
    assert summary.entities == 4 and summary.edges["train"] == 4
    triples = np.array(EDGES)
    shardgraph.import_edges(triples, tmp_path / "e", progress=False)
    assert edges_of(tmp_path / "e") == set(EDGES)
    with pytest.raises(InputError, match=r"shape \(2, 2, 1\)"):
        shardgraph.import_edges(np.zeros((2, 2, 1)), tmp_path / "f", progress=False)


def test_pyg_data(tmp_path: Path) -> None:
    geometric = pytest.importorskip("torch_geometric.data")
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 0, 0]])
    data = geometric.Data(edge_index=edge_index, edge_weight=torch.tensor([1.0, 2.0, 3.0, 4.0]), num_nodes=5)
    summary = shardgraph.import_edges(data, tmp_path / "d", progress=False)
    assert summary.entities == 4 and summary.edges["train"] == 4 and summary.edge_attributes == ["weight"]
    assert edges_of(tmp_path / "d") == {(str(a), "edge", str(b)) for a, b in edge_index.t().tolist()}


def test_pyg_hetero_data(tmp_path: Path) -> None:
    geometric = pytest.importorskip("torch_geometric.data")
    data = geometric.HeteroData()
    data["author"].num_nodes = 3
    data["paper"].num_nodes = 2
    data["author", "writes", "paper"].edge_index = torch.tensor([[0, 1, 2], [0, 0, 1]])
    data["paper", "cites", "paper"].edge_index = torch.tensor([[1], [0]])
    summary = shardgraph.import_edges(data, tmp_path / "d", progress=False)
    assert summary.edges["train"] == 4 and summary.relations == 2
    ds = Dataset(tmp_path / "d")
    assert {t: e.count for t, e in ds.entity_types.items()} == {"author": 3, "paper": 2}
    assert typed_edges(tmp_path / "d") == {("author", "0", "writes", "paper", "0"),
                                            ("author", "1", "writes", "paper", "0"),
                                            ("author", "2", "writes", "paper", "1"),
                                            ("paper", "1", "cites", "paper", "0")}


def test_unsupported_object(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not something edges can be read from"):
        shardgraph.import_edges(object(), tmp_path / "d", progress=False)


# ----------------------------------------------------------------------------- out


@pytest.fixture(scope="module")
def int_model(tmp_path_factory: pytest.TempPathFactory) -> shardgraph.embeddings.model.EmbeddingModel:
    root = tmp_path_factory.mktemp("interop")
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 40, size=(300, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs[pairs == 7] = 8  # node 7 never appears: its row of x stays empty
    shardgraph.import_edges(pairs, root / "ds", partitions=2, progress=False)
    config = load_config(None, [f"data.dataset={root / 'ds'}", "model.dimension=8", "training.epochs=1",
                                "training.workers=1", "training.batch_size=64"])
    train(config, run_dir=root / "run", progress=False)
    return shardgraph.load(root / "run")


def test_to_pandas(int_model: shardgraph.embeddings.model.EmbeddingModel) -> None:
    pytest.importorskip("pandas")
    frame = int_model.to_pandas()
    names = int_model.index().names.to_pylist()
    assert list(frame.index) == names and frame.shape == (len(names), 8)
    np.testing.assert_array_equal(frame.to_numpy(), int_model.vectors(names))


def test_to_pyg_in_node_order(int_model: shardgraph.embeddings.model.EmbeddingModel) -> None:
    pytest.importorskip("torch_geometric")
    data = int_model.to_pyg(num_nodes=45)
    assert data.x.shape == (45, 8)
    names = int_model.index().names.to_pylist()
    vectors = int_model.vectors(names)
    for name, vector in zip(names, vectors, strict=True):
        np.testing.assert_array_equal(data.x[int(name)].numpy(), vector)
    assert not data.embedded[7] and not data.embedded[44] and int(data.embedded.sum()) == len(names)
    assert float(data.x[7].abs().sum()) == 0.0


def test_to_keyed_vectors(int_model: shardgraph.embeddings.model.EmbeddingModel) -> None:
    pytest.importorskip("gensim")
    kv = int_model.to_keyed_vectors()
    names = int_model.index().names.to_pylist()
    assert len(kv) == len(names)
    np.testing.assert_allclose(kv[names[3]], int_model.vectors([names[3]])[0])
    neighbours = [n for n, _ in kv.most_similar(names[0], topn=3)]
    assert neighbours == [p.id for p in int_model.neighbors(names[0], k=3, metric="cos")]
