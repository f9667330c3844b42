"""Node classification on trained embeddings: one-vs-rest logistic regression, Micro/Macro-F1.

The protocol of DeepWalk and node2vec (multi-label data such as BlogCatalog and PPI): for each of
`repeats` seeded random splits, train on a fraction of the labelled nodes, and for every test node
predict its k most probable labels, k = its true number of labels; Micro- and Macro-F1 over the test
nodes, mean and standard deviation over the splits. Single-label data is the case k = 1.
"""

from __future__ import annotations

import gzip
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from shardgraph.errors import InputError, ShardgraphError

log = logging.getLogger(__name__)


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_labels(path: str | Path) -> dict[str, list[str]]:
    """Labels by node id, from lines `node label [label ...]` separated by whitespace or commas ('#' lines
    skipped; several lines of the same node are merged). Plain or .gz."""
    path = Path(path)
    if not path.is_file():
        raise InputError("the label file does not exist", path=path)
    labels: dict[str, list[str]] = {}
    try:
        with _open_text(path) as f:
            for number, line in enumerate(f, start=1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                fields = text.replace(",", " ").split()
                if len(fields) < 2:
                    raise InputError(f"expected a node id and at least one label, got {text[:80]!r}", path=path,
                                     line=number)
                known = labels.setdefault(fields[0], [])
                known.extend(label for label in fields[1:] if label not in known)
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text: {exc}", path=path) from None
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot be read: {exc}", path=path) from None
    if not labels:
        raise InputError("holds no labelled node", path=path)
    return labels


def classify_nodes(embeddings: np.ndarray, label_sets: Sequence[Sequence[str]], *,
                   train_fractions: Sequence[float] = (0.5,), repeats: int = 10, seed: int = 0,
                   jobs: int = 1) -> list[dict[str, Any]]:
    """Micro/Macro-F1 of embeddings (n, D) against each node's labels, one dict per train fraction."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer()
    targets = binarizer.fit_transform(label_sets)
    counts = targets.sum(axis=1)
    single = bool((counts == 1).all())
    n = len(label_sets)
    results = []
    for fraction in train_fractions:
        if not 0 < fraction < 1:
            raise ShardgraphError(f"--train-fraction must be in (0, 1). Got {fraction} instead.")
        train_size = round(fraction * n)
        if train_size < 1 or train_size >= n:
            raise ShardgraphError(f"train fraction {fraction} of {n} labelled nodes leaves no train or test node.")
        micro, macro = [], []
        for split in range(repeats):
            order = np.random.default_rng([seed, split]).permutation(n)
            train, test = order[:train_size], order[train_size:]
            model = OneVsRestClassifier(LogisticRegression(solver="liblinear"), n_jobs=jobs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # labels absent from a small train split
                model.fit(embeddings[train], targets[train])
            scores = model.predict_proba(embeddings[test])
            predicted = np.zeros_like(targets[test])
            ranked = np.argsort(-scores, axis=1)
            for row, k in enumerate(counts[test]):
                predicted[row, ranked[row, :k]] = 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # labels with no test node
                micro.append(float(f1_score(targets[test], predicted, average="micro", zero_division=0)))
                macro.append(float(f1_score(targets[test], predicted, average="macro", zero_division=0)))
        results.append({"train_fraction": fraction, "repeats": repeats, "nodes": n,
                        "labels": len(binarizer.classes_), "multi_label": not single,
                        "micro_f1": float(np.mean(micro)), "micro_f1_std": float(np.std(micro)),
                        "macro_f1": float(np.mean(macro)), "macro_f1_std": float(np.std(macro))})
    return results


def evaluate_nodes(run: str | Path, labels: str | Path, *, train_fractions: Sequence[float] = (0.1, 0.5, 0.9),
                   repeats: int = 10, seed: int = 0, entity_type: str | None = None,
                   jobs: int = 1) -> dict[str, Any]:
    """Node classification on the embeddings of a run (see `classify_nodes`); ids absent from the run are
    counted and listed (up to 10), not silently dropped."""
    from shardgraph.embeddings.model import load

    started = time.perf_counter()
    by_node = read_labels(labels)
    model = load(run)
    entity_type = entity_type or model.entity_types[0]
    if entity_type not in model.entity_types:
        raise ShardgraphError(f"--type {entity_type!r} is not an entity type of {run} "
                              f"(types: {', '.join(model.entity_types)}).")
    names = model.index(entity_type).names.to_pylist()
    known = set(names)
    unknown = [node for node in by_node if node not in known]
    if unknown:
        log.warning(f"{len(unknown):,} labelled ids of {labels} are not {entity_type} entities of the run "
                    f"(e.g. {', '.join(repr(u) for u in unknown[:5])}); they are left out")
    nodes = [node for node in by_node if node in known]
    if len(nodes) < 2:
        raise InputError(f"fewer than 2 labelled ids are entities of the run {run}", path=labels)
    vectors = model.vectors(nodes, entity_type).astype(np.float64)
    results = classify_nodes(vectors, [by_node[node] for node in nodes], train_fractions=train_fractions,
                             repeats=repeats, seed=seed, jobs=jobs)
    return {"run": str(run), "labels": str(labels), "entity_type": entity_type, "labelled_nodes": len(nodes),
            "unknown_ids": len(unknown), "unknown_examples": unknown[:10], "results": results,
            "seconds": round(time.perf_counter() - started, 3)}
