"""GraphSAGE node classification: node tables, hashing, sampler, model, training, prediction, bad input."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from shardgraph.config import FeatureConfig, load_config
from shardgraph.data.dataset import Dataset
from shardgraph.data.encoders import encode_hash
from shardgraph.data.nodes import import_graph
from shardgraph.errors import InputError
from shardgraph.gnn.model import full_adjacency
from shardgraph.gnn.predict import load_sage
from shardgraph.gnn.sampler import NeighborSampler, sample_rows
from shardgraph.gnn.train import train_sage

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- fixtures
def planted_graph(root: Path, n: int = 90, classes: int = 3, seed: int = 0) -> dict[str, Path]:
    """A graph whose nodes link mostly within their class, with a text, a numeric and a tag column."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % classes
    words = [["alpha beta", "gamma delta", "epsilon zeta"][c] for c in label]
    edges = set()
    for u in range(n):
        for _ in range(3):
            same = rng.random() < 0.85
            pool = np.flatnonzero((label == label[u]) if same else (label != label[u]))
            v = int(rng.choice(pool))
            if u != v:
                edges.add((min(u, v), max(u, v)))
    root.mkdir(parents=True, exist_ok=True)
    (root / "edges.tsv").write_text("".join(f"n{u}\tn{v}\n" for u, v in sorted(edges)))
    lines = ["id,name,size,tags"]
    for u in range(n):
        size = "" if u % 7 == 0 else f"{label[u] * 10 + rng.normal():.3f}"
        lines.append(f"n{u},{words[u]} {rng.integers(100)},{size},{label[u]} {rng.integers(3, 6)}")
    (root / "nodes.csv").write_text("\n".join(lines) + "\n")
    (root / "labels.tsv").write_text("".join(f"n{u}\tclass{label[u]}\n" for u in range(n)))
    (root / "config.toml").write_text("""
[nodes]
[nodes.features.name]
encoder = "hash"
tokenizer = "words"
n_features = 32
[nodes.features.size]
encoder = "numeric"
[nodes.features.tags]
encoder = "multi_hot"
n_features = 8
[sage]
hidden = 16
epochs = 60
patience = 60
threads = 1
""")
    return {"edges": root / "edges.tsv", "nodes": root / "nodes.csv", "labels": root / "labels.tsv",
            "config": root / "config.toml"}


@pytest.fixture
def planted(tmp_path: Path) -> dict[str, Path]:
    files = planted_graph(tmp_path / "in")
    out = tmp_path / "ds"
    import_graph([files["edges"]], out, nodes=[files["nodes"]], labels=files["labels"], config=files["config"],
                 progress=False)
    return {**files, "dataset": out}


def sage_config(files: dict[str, Path], *overrides: str):  # type: ignore[no-untyped-def]
    return load_config(files["config"], [f"data.dataset={files['dataset']}", *overrides])


# ----------------------------------------------------------------------------- hashing
@pytest.mark.parametrize("tokenizer,prefix,signed", [("words", True, True), ("whitespace", False, True),
                                                    ("none", True, False), ("char_ngrams", False, True)])
def test_hash_encoder_equals_sklearn_feature_hasher(tokenizer: str, prefix: bool, signed: bool) -> None:
    from sklearn.feature_extraction import FeatureHasher

    values = ["customer_id", "Order Date", "", None, "é ü x12345678901234 abcd", "a" * 37, "ÆØÅ 漢字 ok", "x"]
    config = FeatureConfig(tokenizer=tokenizer, n_features=64, prefix=prefix, alternate_sign=signed, ngram=3)
    block = encode_hash(pa.array(values, pa.string()), "col", config)
    ours = np.zeros((len(values), 64))
    np.add.at(ours, (block.rows, block.columns), block.values)

    def tokens(value: str | None) -> list[str]:  # the tokenizers, written plainly
        text = value or ""
        if tokenizer == "words":
            found = re.sub(r"[\W_]+", " ", text).lower().split()
        elif tokenizer == "whitespace":
            found = text.split()
        elif tokenizer == "none":
            found = [text] if text else []
        else:
            found = [text[i : i + 3] for i in range(max(len(text) - 2, 1 if text else 0))]
        return [("col=" if prefix else "") + t for t in found]

    reference = FeatureHasher(64, input_type="string", alternate_sign=signed).transform(
        [tokens(v) for v in values]).toarray()
    np.testing.assert_array_equal(ours, reference)


# ----------------------------------------------------------------------------- sampler
def random_csr(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[set[int]]]:
    rng = np.random.default_rng(seed)
    neighbours = [set(rng.choice(n, size=int(rng.integers(0, 40)), replace=False).tolist()) for _ in range(n)]
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in neighbours])]).astype(np.int64)
    indices = np.concatenate([sorted(s) for s in neighbours]).astype(np.int32)
    return indptr, indices, neighbours


@pytest.mark.parametrize("compiled", [True, False])
def test_sampled_neighbourhoods_are_subsets_of_the_true_ones_with_the_right_sizes(compiled: bool) -> None:
    indptr, indices, neighbours = random_csr(300, 1)
    targets = np.arange(0, 300, 3)
    for fanout in (1, 5, 25, 100):
        counts, sampled = sample_rows(indptr, indices, targets, fanout, seed=fanout, compiled=compiled)
        at = 0
        for t, c in zip(targets, counts, strict=True):
            got = sampled[at : at + c].tolist()
            at += c
            assert c == min(fanout, len(neighbours[t]))
            assert len(set(got)) == len(got)  # without replacement
            assert set(got) <= neighbours[t]
        assert at == len(sampled)
    sampler = NeighborSampler(indptr, indices, [10, 4], seed=3, compiled=compiled)
    nodes, blocks = sampler.sample(targets[:20])
    assert np.array_equal(nodes[:20], targets[:20])
    for block, fanout in zip(blocks, [10, 4], strict=True):
        # frontiers are prefixes of the last one: block l maps nodes[:num_src] onto nodes[:num_dst]
        frontier, sources = nodes[: block.num_dst], nodes[: block.num_src]
        for d in range(block.num_dst):
            src = sources[block.src[block.dst == d]]
            assert len(src) == min(fanout, len(neighbours[frontier[d]]))
            assert set(src.tolist()) <= neighbours[frontier[d]]
    assert blocks[0].num_dst == 20 and blocks[1].num_dst == blocks[0].num_src
    # draws follow the seed, not chance
    again = NeighborSampler(indptr, indices, [10, 4], seed=3, compiled=compiled).sample(targets[:20])
    assert np.array_equal(again[0], nodes)


def test_compiled_sampler_is_built() -> None:
    from shardgraph.gnn.sampler import _library

    assert _library() is not None, "shardgraph._sampler was not built (make install)"


# ----------------------------------------------------------------------------- import
def test_node_tables_are_aligned_with_the_dictionaries(planted: dict[str, Path]) -> None:
    dataset = Dataset(planted["dataset"])
    tables = dataset.manifest["node_tables"]
    assert tables["rows"] == 90 and tables["classes"] == 3 and tables["labelled"] == 90
    names = dataset.entity_names("entity", 0)
    indptr = np.load(planted["dataset"] / "nodes/entity/part_0.indptr.npy")
    cols = np.load(planted["dataset"] / "nodes/entity/part_0.indices.npy")[:, 0]
    dense = np.load(planted["dataset"] / "nodes/entity/part_0.dense.npy")
    rows = {line.split(",")[0]: line.split(",") for line in planted["nodes"].read_text().splitlines()[1:]}
    for local, name in enumerate(names):
        tags = {int(t) + 32 for t in rows[name][3].split()}  # multi_hot after the 32 hashed columns
        assert tags <= set(cols[indptr[local] : indptr[local + 1]].tolist())
        size = rows[name][2]
        assert dense[local, 1] == (size == "")
        if size:
            assert dense[local, 0] == pytest.approx(float(size), abs=1e-5)


# ----------------------------------------------------------------------------- model equivalences
def test_full_batch_and_minibatch_training_give_the_same_predictions(planted: dict[str, Path], tmp_path: Path
                                                                     ) -> None:
    base = ["sage.dropout=0", "sage.epochs=15", "sage.patience=100"]
    full = train_sage(sage_config(planted, *base, "sage.mode='full'"), tmp_path / "full")
    degree = int(np.diff(np.asarray(load_sage(full.path).data.indptr)).max())
    mini = train_sage(sage_config(planted, *base, "sage.mode='minibatch'", "sage.batch_size=1000",
                                  f"sage.fanouts=[{degree}, {degree}]"), tmp_path / "mini")
    assert full.metrics["test"]["accuracy"] == mini.metrics["test"]["accuracy"]
    full_model, mini_model = load_sage(full.path), load_sage(mini.path)
    assert not mini_model.full
    for (_, a), (_, b) in zip(full_model.model.state_dict().items(), mini_model.model.state_dict().items(),
                              strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the sampled path against one product over the whole graph
    nodes = np.arange(90)
    features = full_model.data.features
    with torch.no_grad():
        whole = full_model.model(features.gather(nodes), [full_adjacency(full_model.data.indptr,
                                                                         full_model.data.indices, "mean")] * 2)
    expected = torch.softmax(whole, 1).numpy()
    np.testing.assert_allclose(mini_model.probabilities(nodes, method="sampled"), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mini_model.probabilities(nodes, method="layerwise"), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("aggregator", ["gcn", "max"])
def test_other_aggregators_train_and_agree_with_the_whole_graph(planted: dict[str, Path], tmp_path: Path,
                                                                aggregator: str) -> None:
    run = train_sage(sage_config(planted, f"sage.aggregator='{aggregator}'", "sage.epochs=30"), tmp_path / "r")
    assert run.metrics["test"]["accuracy"] > 0.6
    model = load_sage(run.path)
    nodes = np.arange(90)
    sampled = model.probabilities(nodes, method="sampled")
    if aggregator == "gcn":
        np.testing.assert_allclose(model.probabilities(nodes, method="layerwise"), sampled, rtol=1e-4, atol=1e-5)


def test_inductive_prediction_equals_transductive_when_the_neighbourhood_is_unchanged(
        planted: dict[str, Path], tmp_path: Path) -> None:
    run = train_sage(sage_config(planted), tmp_path / "run")
    full_model = load_sage(run.path)
    node = "n5"
    transductive = full_model.predict_labels([node], k=3)
    # the same graph without n5: its row and its edges come back as new input
    edges = planted["edges"].read_text().splitlines()
    (tmp_path / "without.tsv").write_text("".join(e + "\n" for e in edges if node not in e.split("\t")))
    (tmp_path / "new_edges.tsv").write_text("".join(e + "\n" for e in edges if node in e.split("\t")))
    lines = planted["nodes"].read_text().splitlines()
    mine = [row for row in lines if row.startswith(node + ",")]
    (tmp_path / "nodes_without.csv").write_text("".join(row + "\n" for row in lines if row not in mine))
    (tmp_path / "new_nodes.csv").write_text("\n".join([lines[0], *mine]))
    labels = planted["labels"].read_text().splitlines()
    (tmp_path / "labels_without.tsv").write_text("".join(row + "\n" for row in labels
                                                         if not row.startswith(node + "\t")))
    import_graph([tmp_path / "without.tsv"], tmp_path / "ds_without", nodes=[tmp_path / "nodes_without.csv"],
                 labels=tmp_path / "labels_without.tsv", config=planted["config"], progress=False)
    inductive = load_sage(run.path, dataset=tmp_path / "ds_without").predict_labels(
        k=3, new_nodes=[tmp_path / "new_nodes.csv"], new_edges=[tmp_path / "new_edges.tsv"])
    assert inductive.ids == [node] and inductive.new.tolist() == [True]
    assert inductive.labels == transductive.labels
    np.testing.assert_allclose(inductive.probabilities, transductive.probabilities, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- runs
@pytest.mark.parametrize("command", ["train-sage", "train"])
def test_train_evaluate_and_predict_through_the_cli(planted: dict[str, Path], tmp_path: Path, command: str) -> None:
    """`train-sage CONFIG`, or `train CONFIG` with model.kind = "sage" (and --dataset), then predict-labels."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cli = [sys.executable, "-m", "shardgraph"]
    how = ["-p", f"data.dataset={planted['dataset']}"] if command == "train-sage" else \
        ["-p", "model.kind=sage", "--dataset", str(planted["dataset"])]
    out = subprocess.run([*cli, command, str(planted["config"]), *how, "--out", str(tmp_path / "run"), "--json"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.splitlines()[-1])
    assert metrics["test"]["accuracy"] > 0.8 and metrics["test"]["top2_accuracy"] >= metrics["test"]["accuracy"]
    assert {"macro_f1", "micro_f1", "most_confused", "calibration"} <= set(metrics["test"])
    (tmp_path / "new.csv").write_text("id,name,size,tags\nfresh,gamma delta 7,11.2,1 4\n")
    (tmp_path / "new.tsv").write_text("fresh\tn1\nfresh\tn4\n")
    out = subprocess.run([*cli, "predict-labels", str(tmp_path / "run"), "--nodes", str(tmp_path / "new.csv"),
                          "--edges", str(tmp_path / "new.tsv"), "-k", "2", "--out", str(tmp_path / "p.parquet"),
                          "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    table = pa.parquet.read_table(tmp_path / "p.parquet").to_pylist()
    assert table[0]["id"] == "fresh" and table[0]["label_1"] == "class1"
    assert table[0]["probability_1"] >= table[0]["probability_2"]


def test_a_run_killed_with_sigkill_resumes(planted: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "shardgraph", "train-sage", str(planted["config"]),
            "-p", f"data.dataset={planted['dataset']}", "-p", "sage.epochs=100000", "-p", "sage.patience=100000",
            "-p", "sage.checkpoint_seconds=0", "-p", "sage.mode='minibatch'", "-p", "sage.batch_size=8",
            "--out", str(run_dir)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (run_dir / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "model.pt").exists()
    epoch = torch.load(run_dir / "checkpoint.pt", weights_only=False)["epoch"]
    assert epoch >= 1
    resumed = train_sage(sage_config(planted, f"sage.epochs={epoch + 3}", "sage.patience=100000",
                                     "sage.mode='minibatch'", "sage.batch_size=8"), run_dir, resume=True)
    assert resumed.epochs == epoch + 3
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, epoch + 4))
    assert (run_dir / "model.pt").exists()


# ----------------------------------------------------------------------------- bad input
def test_bad_node_tables_are_refused_naming_the_place(planted: dict[str, Path], tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    def attempt(nodes: str, labels: str | None = None, config_extra: str = "") -> InputError:
        (tmp_path / "bad.csv").write_text(nodes)
        config = tmp_path / "bad.toml"
        config.write_text(planted["config"].read_text() + config_extra)
        label_file = None
        if labels is not None:
            label_file = tmp_path / "bad_labels.tsv"
            label_file.write_text(labels)
        with pytest.raises(InputError) as info:
            import_graph([planted["edges"]], tmp_path / "out", nodes=[tmp_path / "bad.csv"], labels=label_file,
                         config=config, progress=False)
        assert not (tmp_path / "out").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out") or "tmp" in p.name]
        return info.value

    error = attempt("id,name,tags\nn1,a b,1\n")
    assert "no column 'size'" in str(error) and error.field == "size"
    error = attempt("id,name,size,tags\nn1,a,1.5,1\nn2,b,twelve,2\n")
    assert (error.line, error.field) == (3, "size") and "'twelve' is not a number" in str(error)
    error = attempt("id,name,size,tags\nn1,a,1.5,1\n", labels="n1\tx\nghost\ty\n")
    assert error.line == 2 and "label for an id" in str(error)
    caplog.set_level(logging.WARNING, logger="shardgraph")
    (tmp_path / "once.tsv").write_text("n1\ta\nn2\ta\nn3\tb\n")
    import_graph([planted["edges"]], tmp_path / "ok", nodes=[planted["nodes"]], labels=tmp_path / "once.tsv",
                 config=planted["config"], progress=False)
    assert "single node (b)" in caplog.text


def test_empty_training_split_and_mismatched_new_nodes_are_refused(planted: dict[str, Path], tmp_path: Path
                                                                  ) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="training split is empty"):
        train_sage(sage_config(planted, f"sage.split_train='{tmp_path / 'empty.txt'}'",
                               f"sage.split_test='{tmp_path / 'empty.txt'}'"), tmp_path / "run")
    run = train_sage(sage_config(planted, "sage.epochs=2"), tmp_path / "run2")
    (tmp_path / "new.csv").write_text("id,name,tags\nfresh,a b,1\n")
    (tmp_path / "new.tsv").write_text("fresh\tn1\n")
    with pytest.raises(InputError, match="no column 'size'"):
        load_sage(run.path).predict_labels(new_nodes=[tmp_path / "new.csv"], new_edges=[tmp_path / "new.tsv"])
    (tmp_path / "new.csv").write_text("id,name,size,tags\nfresh,a b,1,1\n")
    (tmp_path / "new.tsv").write_text("fresh\tn1\nfresh\tnobody\n")
    with pytest.raises(InputError, match="'nobody' is neither a known node nor a new one") as info:
        load_sage(run.path).predict_labels(new_nodes=[tmp_path / "new.csv"], new_edges=[tmp_path / "new.tsv"])
    assert info.value.line == 2


# ----------------------------------------------------------------------------- quality
CORA = REPO.parent / "shared" / "datasets" / "cora"


@pytest.mark.slow
@pytest.mark.skipif(not CORA.is_dir(), reason="shared/datasets/cora is not there")
def test_cora_public_split_accuracy(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from bench.sage_data import convert

    convert(CORA, tmp_path / "cora")
    (tmp_path / "c.toml").write_text(f"""
[nodes]
labels = "{tmp_path / 'cora/labels.tsv'}"
[nodes.features.words]
encoder = "multi_hot"
n_features = 1433
[sage]
split_train = "{tmp_path / 'cora/split_train.txt'}"
split_valid = "{tmp_path / 'cora/split_val.txt'}"
split_test = "{tmp_path / 'cora/split_test.txt'}"
""")
    import_graph([tmp_path / "cora/edges.tsv"], tmp_path / "ds", nodes=[tmp_path / "cora/nodes.csv"],
                 config=tmp_path / "c.toml", progress=False)
    accuracies = [train_sage(load_config(tmp_path / "c.toml", [f"data.dataset={tmp_path / 'ds'}",
                                                               f"sage.seed={seed}"]),
                             tmp_path / f"run{seed}").metrics["test"]["accuracy"] for seed in range(3)]
    assert np.mean(accuracies) >= 0.79


def test_report_of_a_sage_run_draws_every_figure(planted: dict[str, Path], tmp_path: Path) -> None:
    from shardgraph.report.sage import is_sage_run, write_sage_report

    run = train_sage(sage_config(planted, "sage.epochs=20"), tmp_path / "run")
    assert is_sage_run(run.path)
    page = write_sage_report(run.path).read_text()
    titles = re.findall(r"<h2>([^<]+)</h2><img src='data:image/png;base64,", page)
    assert {"Loss", "Accuracy", "Calibration (test)"} <= set(titles)
    assert any(t.startswith("Confidence of the first prediction") for t in titles)
    assert sum(t.startswith("Node representations") for t in titles) == 2


def test_embedding_encoder_takes_the_vectors_of_another_run(planted: dict[str, Path], tmp_path: Path) -> None:
    from shardgraph.embeddings.model import load
    from shardgraph.training.trainer import train

    edges_only = tmp_path / "edges_ds"
    import_graph([planted["edges"]], edges_only, progress=False)
    train(load_config(None, [f"data.dataset={edges_only}", "model.dimension=8", "training.epochs=1",
                             "training.workers=1"]), run_dir=tmp_path / "kge", progress=False)
    config = tmp_path / "with_embedding.toml"
    config.write_text(planted["config"].read_text().replace("[sage]", f"""[nodes.features.kge]
encoder = "embedding"
run = "{tmp_path / 'kge'}"
[sage]"""))
    out = tmp_path / "ds_with_embedding"
    import_graph([planted["edges"]], out, nodes=[planted["nodes"]], config=config, progress=False)
    slot = next(s for s in Dataset(out).manifest["node_tables"]["features"] if s["name"] == "kge")
    dense = np.load(out / "nodes/entity/part_0.dense.npy")[:, slot["start"] : slot["start"] + slot["width"]]
    names = Dataset(out).entity_names("entity", 0)
    np.testing.assert_allclose(dense, load(tmp_path / "kge").vectors(names), rtol=1e-6)


# ----------------------------------------------------------------------------- multi-label
def test_multilabel_metrics_equal_a_naive_computation() -> None:
    from sklearn.metrics import f1_score

    from shardgraph.gnn.metrics import multilabel_metrics

    rng = np.random.default_rng(3)
    n, c = 200, 6
    probabilities = rng.random((n, c)).astype(np.float32)
    sets = [sorted(rng.choice(c, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(n)]
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in sets])])
    got = multilabel_metrics(probabilities, indptr, np.concatenate(sets), [f"l{i}" for i in range(c)], k=2)

    truth = np.zeros((n, c), dtype=int)
    predicted = np.zeros((n, c), dtype=int)
    first, top2 = [], []
    for i, s in enumerate(sets):
        truth[i, s] = 1
        order = sorted(range(c), key=lambda j: -probabilities[i, j])
        predicted[i] = [1 if probabilities[i, j] >= 0.5 or j == order[0] else 0 for j in range(c)]
        first.append(order[0] in s)
        top2.append(bool(set(order[:2]) & set(s)))
    assert got["accuracy"] == pytest.approx(np.mean(first))
    assert got["top2_accuracy"] == pytest.approx(np.mean(top2))
    assert got["micro_f1"] == pytest.approx(f1_score(truth, predicted, average="micro"))
    assert got["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert got["exact_match"] == pytest.approx(np.mean([(truth[i] == predicted[i]).all() for i in range(n)]))
    assert got["label_cardinality"] == pytest.approx(np.mean([len(s) for s in sets]))


@pytest.fixture
def multi_labelled(tmp_path: Path) -> dict[str, Path]:
    """The planted graph, where nodes whose tag column holds 5 carry a second label, `five`."""
    files = planted_graph(tmp_path / "in")
    fives = [line.split(",")[0] for line in files["nodes"].read_text().splitlines()[1:]
             if line.split(",")[3].split()[1] == "5"]
    assert 15 < len(fives) < 60
    with open(files["labels"], "a") as f:
        f.write("".join(f"{node}\tfive\n" for node in fives))
    out = tmp_path / "ds"
    import_graph([files["edges"]], out, nodes=[files["nodes"]], labels=files["labels"], config=files["config"],
                 progress=False)
    return {**files, "dataset": out, "fives": Path(",".join(fives))}


def test_multi_label_training_learns_every_label(multi_labelled: dict[str, Path], tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    fives = set(str(multi_labelled["fives"]).split(","))
    run = train_sage(sage_config(multi_labelled, "sage.multi_label=true", "sage.epochs=150", "sage.patience=150",
                                 "sage.lr=0.02"), tmp_path / "multi")
    test = run.metrics["test"]
    assert test["multi_label"] and test["label_cardinality"] > 1.1
    assert test["accuracy"] >= 0.9 and test["micro_f1"] >= 0.85, test

    model = load_sage(run.path)
    names = [f"n{u}" for u in range(90)]
    probabilities = model.probabilities(model.node_ids(names))
    assert not np.allclose(probabilities.sum(1), 1.0)  # independent sigmoids, not one softmax
    five = model.classes.index("five")
    said_five = {name for name, p in zip(names, probabilities[:, five], strict=True) if p >= 0.5}
    assert len(said_five ^ fives) <= 9, (sorted(said_five - fives), sorted(fives - said_five))
    predictions = model.predict_labels(names, k=2)
    assert predictions.probabilities.shape == (90, 2)
    np.testing.assert_allclose(predictions.probabilities[:, 0], probabilities.max(1), rtol=1e-5)

    # the same data trained single-label says that the second labels are ignored
    with caplog.at_level(logging.WARNING):
        single = train_sage(sage_config(multi_labelled, "sage.epochs=5"), tmp_path / "single")
    assert "have several labels; only the first of each is learnt" in caplog.text
    assert not single.metrics["test"].get("multi_label")


def test_top_k_labels_match_a_naive_ranking_and_keep_no_full_sort_alive() -> None:
    """top_k against a per-row sort in Python (ties: the lower label first); its arrays must not be
    views of the (n, C) argsort: predict-labels keeps one per chunk of nodes until the end."""
    from shardgraph.gnn.predict import top_k

    rng = np.random.default_rng(0)
    probabilities = rng.random((300, 40)).astype(np.float32)
    probabilities[5, [3, 7]] = 2.0  # a tie at the top
    labels, top_p = top_k(probabilities, 3)
    for row in range(len(probabilities)):
        naive = sorted(range(40), key=lambda c: (-float(probabilities[row, c]), c))[:3]
        assert labels[row].tolist() == naive
        np.testing.assert_array_equal(top_p[row], probabilities[row, naive])
    assert labels[5, :2].tolist() == [3, 7]
    for array in (labels, top_p):
        assert array.base is None or array.base.nbytes == array.nbytes, "a view of a larger array"
