"""Using the embeddings: every export format read back, score/predict/neighbors against brute
force, approximate indexes, fold-in of new entities, and the errors of bad queries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from shardgraph.config import load_config
from shardgraph.data.importer import import_edges
from shardgraph.embeddings.foldin import write_new_entities
from shardgraph.embeddings.index import NeighborIndex, build_index
from shardgraph.embeddings.model import EmbeddingModel, load
from shardgraph.embeddings.writers import export, export_relations
from shardgraph.errors import CheckpointError, QueryError
from shardgraph.training.trainer import train
from tests.conftest import REPO, kg_files


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    files = kg_files("kinship")
    import_edges([files["train"]], root / "ds", valid=[files["valid"]], test=[files["test"]], partitions=2,
                 progress=False)
    config = load_config(None, [f"data.dataset={root / 'ds'}", "model.dimension=24", "model.operator=diagonal",
                                "training.epochs=6", "training.workers=1", "training.batch_size=256",
                                "training.num_batch_negs=32", "training.num_uniform_negs=32"])
    train(config, run_dir=root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def model(trained: Path) -> EmbeddingModel:
    return load(trained)


def all_vectors(model: EmbeddingModel) -> tuple[list[str], np.ndarray]:
    names = model.index().names.to_pylist()
    return names, model.vectors(names)


# ----------------------------------------------------------------------------- export


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_every_format_reads_back(tmp_path: Path, trained: Path, model: EmbeddingModel, dtype: str) -> None:
    names, vectors = all_vectors(model)
    tolerance = 1e-6 if dtype == "float32" else 2e-3
    export(trained, "tsv", tmp_path / "e.tsv", dtype=dtype, progress=False)
    rows = [line.split("\t") for line in (tmp_path / "e.tsv").read_text().splitlines()]
    assert [r[0] for r in rows] == names
    np.testing.assert_allclose(np.array([[float(x) for x in r[1:]] for r in rows]), vectors, atol=tolerance)

    export(trained, "w2v", tmp_path / "e.w2v", dtype=dtype, progress=False)
    from gensim.models import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "e.w2v"))
    assert list(kv.index_to_key) == names
    np.testing.assert_allclose(kv.vectors, vectors, atol=tolerance)

    export(trained, "npy", tmp_path / "e.npy", dtype=dtype, progress=False)
    loaded = np.load(tmp_path / "e.npy")
    assert loaded.dtype == np.dtype(dtype)
    np.testing.assert_allclose(loaded.astype(np.float32), vectors, atol=tolerance)
    assert (tmp_path / "e.ids.txt").read_text().splitlines() == names

    export(trained, "parquet", tmp_path / "e.parquet", dtype=dtype, progress=False)
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column("id").to_pylist() == names
    np.testing.assert_allclose(np.array(table.column("vector").to_pylist(), dtype=np.float32), vectors,
                               atol=tolerance)

    export(trained, "h5", tmp_path / "e.h5", dtype=dtype, progress=False)
    with h5py.File(tmp_path / "e.h5") as f:
        assert [x.decode() for x in f["ids/entity"][:]] == names
        np.testing.assert_allclose(f["embeddings/entity"][:].astype(np.float32), vectors, atol=tolerance)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_relations_export(tmp_path: Path, trained: Path, model: EmbeddingModel) -> None:
    export_relations(trained, tmp_path / "r.json")
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["relations"] == model.relations
    export_relations(trained, tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz") as npz:
        for key, table in model.tables.items():
            np.testing.assert_array_equal(npz[key], table.numpy())


# ----------------------------------------------------------------------------- queries


def brute_scores(model: EmbeddingModel, lhs: str, relation: str) -> dict[str, float]:
    names = model.index().names.to_pylist()
    scores = model.score([lhs] * len(names), relation, names)
    return dict(zip(names, scores.tolist(), strict=True))


def test_score_equals_the_training_scorer(model: EmbeddingModel) -> None:
    names, vectors = all_vectors(model)
    relation = model.relations[3]
    lhs, rhs = names[:7], names[7:14]
    expected = model.model.score(torch.from_numpy(vectors[:7]), torch.full((7,), 3), torch.from_numpy(vectors[7:14]),
                                 model.tables)
    np.testing.assert_allclose(model.score(lhs, relation, rhs), expected.numpy(), rtol=1e-6)


def test_predict_equals_brute_force(model: EmbeddingModel) -> None:
    relation = model.relations[0]
    query = model.index().names.to_pylist()[5]
    scores = brute_scores(model, query, relation)
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:10]
    predicted = model.predict(lhs=query, relation=relation, k=10, exclude_known=False)
    assert [p.id for p in predicted] == [name for name, _ in top]
    np.testing.assert_allclose([p.score for p in predicted], [s for _, s in top], rtol=1e-5)


def test_predict_lhs_direction(model: EmbeddingModel) -> None:
    relation = model.relations[1]
    names = model.index().names.to_pylist()
    target = names[2]
    scores = dict(zip(names, model.score(names, relation, [target] * len(names)).tolist(), strict=True))
    predicted = model.predict(rhs=target, relation=relation, k=5, exclude_known=False)
    if model.model.dynamic:
        assert len(predicted) == 5  # the lhs direction has its own operator: checked by the scorer tests
    else:
        assert [p.id for p in predicted] == [n for n, _ in sorted(scores.items(), key=lambda kv: -kv[1])[:5]]


def test_exclude_known_removes_exactly_the_known_edges(model: EmbeddingModel) -> None:
    relation = model.relations[0]
    dataset = model.run.dataset
    edges = np.concatenate([dataset.global_edges(s) for s in ("train", "valid", "test")])
    names = model.index().names.to_pylist()
    lhs_id = int(edges[edges[:, 1] == 0][0, 0])
    known = {names[int(r)] for r in edges[(edges[:, 0] == lhs_id) & (edges[:, 1] == 0), 2]}
    everything = model.predict(lhs=names[lhs_id], relation=relation, k=len(names), exclude_known=False)
    filtered = model.predict(lhs=names[lhs_id], relation=relation, k=len(names), exclude_known=True)
    assert [p.id for p in filtered] == [p.id for p in everything if p.id not in known]
    assert known and not known & {p.id for p in filtered}


@pytest.mark.parametrize("metric", ["cos", "dot", "l2"])
def test_neighbors_equal_brute_force_and_flat_index(tmp_path: Path, model: EmbeddingModel, metric: str) -> None:
    names, vectors = all_vectors(model)
    q = 3
    if metric == "cos":
        normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        similarity = normed @ normed[q]
    elif metric == "dot":
        similarity = vectors @ vectors[q]
    else:
        similarity = -np.linalg.norm(vectors - vectors[q], axis=1)
    order = [i for i in np.argsort(-similarity, kind="stable") if i != q][:5]
    found = model.neighbors(names[q], k=5, metric=metric)
    assert [p.id for p in found] == [names[i] for i in order]
    build_index(model, tmp_path / "flat", kind="flat", metric=metric)
    indexed = model.neighbors(names[q], k=5, metric=metric, index=tmp_path / "flat")
    assert [p.id for p in indexed] == [names[i] for i in order]


def test_approximate_index_recall(tmp_path: Path, model: EmbeddingModel) -> None:
    for kind, setting in (("hnsw", "ef_search"), ("ivf", "nprobe")):
        result = build_index(model, tmp_path / kind, kind=kind, metric="cos", target_recall=0.95)
        # the search setting is the first (doubling) one whose recall reaches the target
        assert result["recall@10"] >= 0.95, result
        assert result["tuning"][-1]["setting"] == result[setting]
        assert all(step["recall@10"] < 0.95 for step in result["tuning"][:-1])
        loaded = NeighborIndex.load(tmp_path / kind)
        assert (loaded.index.hnsw.efSearch if kind == "hnsw" else loaded.index.nprobe) == result[setting]


# ----------------------------------------------------------------------------- fold-in


def test_fold_in_of_a_copy_lands_near_the_original(tmp_path: Path, model: EmbeddingModel) -> None:
    dataset = model.run.dataset
    names = model.index().names.to_pylist()
    edges = dataset.global_edges("train")
    counts = np.bincount(np.concatenate([edges[:, 0], edges[:, 2]]), minlength=len(names))
    original = int(np.argsort(-counts)[10])  # a well connected entity
    copy_edges = []
    for lhs, rel, rhs in edges[(edges[:, 0] == original) | (edges[:, 2] == original)].tolist():
        copy_edges.append(("NEW" if lhs == original else names[lhs], model.relations[rel],
                           "NEW" if rhs == original else names[rhs]))
    new = model.embed_new(copy_edges, epochs=60)
    ids, _ = new["entity"]
    assert ids == ["NEW"]
    out = write_new_entities(model, new, tmp_path / "with_new")
    extended = load(out["run"])
    assert extended.count() == model.count() + 1
    nearest = [p.id for p in extended.neighbors("NEW", k=3)]
    assert names[original] in nearest, nearest
    # the new entity is usable by score and predict like any other
    assert extended.score(["NEW"], model.relations[0], [names[0]]).shape == (1,)
    assert len(extended.predict(lhs="NEW", relation=model.relations[0], k=3)) == 3
    write_new_entities(model, new, tmp_path / "new.npy")
    np.testing.assert_allclose(np.load(tmp_path / "new.npy"), extended.vectors(["NEW"]), atol=1e-6)


# ----------------------------------------------------------------------------- bad queries


def test_query_errors(model: EmbeddingModel, tmp_path: Path) -> None:
    names = model.index().names.to_pylist()
    with pytest.raises(QueryError, match=rf"unknown entity id '{names[0]}x'\. Closest known ids: '{names[0]}'"):
        model.vectors([names[0] + "x"])
    with pytest.raises(QueryError, match=r"unknown relation 'nope'.* Known: "):
        model.predict(lhs=names[0], relation="nope")
    with pytest.raises(QueryError, match=r"k must be a positive number"):
        model.predict(lhs=names[0], relation=model.relations[0], k=0)
    with pytest.raises(QueryError, match=r"k must be a positive number"):
        model.neighbors(names[0], k=-1)
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "missing")


def test_incompatible_run_version(tmp_path: Path, trained: Path) -> None:
    import shutil

    shutil.copytree(trained, tmp_path / "old")
    info = json.loads((tmp_path / "old" / "run.json").read_text())
    (tmp_path / "old" / "run.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(CheckpointError, match="version 99"):
        load(tmp_path / "old")
    proc = subprocess.run([sys.executable, "-m", "shardgraph", "neighbors", str(tmp_path / "old"), "x"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "version 99" in proc.stderr


def test_cli_queries(trained: Path, model: EmbeddingModel, tmp_path: Path) -> None:
    names = model.index().names.to_pylist()
    relation = model.relations[0]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shardgraph", *args], cwd=REPO, capture_output=True, text=True)

    out = run("neighbors", str(trained), names[0], "-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["neighbors"]) == 3
    (tmp_path / "ids.txt").write_text("\n".join(names[:4]) + "\n")
    out = run("predict", str(trained), "--lhs-file", str(tmp_path / "ids.txt"), "--relation", relation, "-k", "2",
              "--json")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 4
    (tmp_path / "edges.tsv").write_text("".join(f"{names[i]}\t{relation}\t{names[i + 1]}\n" for i in range(20)))
    out = run("score", str(trained), "--edges", str(tmp_path / "edges.tsv"), "--out", str(tmp_path / "s.tsv"))
    assert out.returncode == 0, out.stderr
    scores = [float(line.split("\t")[3]) for line in (tmp_path / "s.tsv").read_text().splitlines()]
    np.testing.assert_allclose(scores, model.score(names[:20], relation, names[1:21]), rtol=1e-5)
    bad = run("predict", str(trained), "--lhs", "nobody", "--relation", relation)
    assert bad.returncode == 2 and "unknown entity id 'nobody'" in bad.stderr
