"""Embeddings for entities that arrived after training (fold-in).

The trained model is frozen; only the rows of the new entities are optimised, with the
training loss, on their edges to known entities (and to each other), against negatives
drawn from the known entities. The work happens on a compact table holding the known
rows the new edges touch, a sample of known rows for negatives, and the new rows, so it
costs memory in proportion to the new edges, not to the graph.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from shardgraph.data.reader import EdgeFileReader
from shardgraph.errors import InputError, QueryError, ShardgraphError
from shardgraph.storage.run import ADDED
from shardgraph.training.optim import rowwise_adagrad_
from shardgraph.training.step import BatchStep, Table
from shardgraph.training.worker import iter_batches
from shardgraph.utils.arrays import unique_sorted
from shardgraph.utils.atomic import atomic_directory

if TYPE_CHECKING:
    from shardgraph.embeddings.model import EmbeddingModel

log = logging.getLogger(__name__)

NewEntities = dict[str, tuple[list[str], np.ndarray]]  # type -> (ids, vectors (m, D) as stored)


def read_edges(edges: str | Path | Sequence[tuple[str, ...]], relations: list[str],
               columns: str = "auto") -> tuple[list[str], list[str], list[str]]:
    """(lhs ids, relation names, rhs ids) from an edge file or a list of (lhs, rel, rhs) tuples."""
    if isinstance(edges, (str, Path)):
        lhs: list[str] = []
        rel: list[str] = []
        rhs: list[str] = []
        for block in EdgeFileReader(edges, columns=columns):
            lhs += block.lhs.to_pylist()
            rhs += block.rhs.to_pylist()
            if block.rel is not None:
                rel += block.rel.to_pylist()
            elif len(relations) == 1:
                rel += [relations[0]] * len(block)
            else:
                raise InputError(f"has no relation column and the model has {len(relations)} relations",
                                 path=edges)
        return lhs, rel, rhs
    rows = [tuple(e) for e in edges]
    if any(len(e) != 3 for e in rows):
        raise QueryError("edges must be (lhs, relation, rhs) triples.")
    return [str(e[0]) for e in rows], [str(e[1]) for e in rows], [str(e[2]) for e in rows]


class _Compact:
    """A compact table of one entity type: known rows used, negative samples, then new rows."""

    def __init__(self, model: EmbeddingModel, entity_type: str, known: np.ndarray, new: list[str],
                 negatives: int, rng: np.random.Generator, init_scale: float) -> None:
        spec = model.model.entity_types[entity_type]
        total = model.count(entity_type)
        sample = rng.choice(total, size=min(total, negatives), replace=False) if total else np.zeros(0, np.int64)
        self.known_ids = unique_sorted(np.concatenate([known, sample]).astype(np.int64))
        self.known_count = len(self.known_ids)
        vectors = model.gather(spec, self.known_ids)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        fresh = torch.randn(len(new), spec.dim, generator=generator) * init_scale
        self.new_names = new
        self.table = Table(torch.cat([vectors, fresh]).contiguous(), torch.zeros(self.known_count + len(new)),
                           self.known_count + len(new))

    def rows(self, global_ids: np.ndarray, new_index: np.ndarray) -> np.ndarray:
        """Compact rows of endpoints: known global ids (new_index < 0) or new entities (new_index >= 0)."""
        out = np.searchsorted(self.known_ids, np.maximum(global_ids, 0))
        return np.where(new_index >= 0, self.known_count + new_index, out)


def fold_in(model: EmbeddingModel, edges: str | Path | Sequence[tuple[str, ...]], *, epochs: int = 50,
            lr: float | None = None, negatives: int = 1000, batch_size: int = 1000, seed: int = 0,
            columns: str = "auto") -> NewEntities:
    """Embed the entities of `edges` that the model does not know. Returns {type: (ids, vectors)}."""
    if epochs <= 0:
        raise QueryError(f"epochs must be a positive number. Got {epochs} instead.")
    started = time.perf_counter()
    net = model.model
    lhs, rel, rhs = read_edges(edges, model.relations, columns)
    if not lhs:
        raise QueryError("no edges to embed new entities from.")
    rel_ids = np.array([model.relation_id(r) for r in rel], dtype=np.int64)
    # which endpoints are new: look up per type without raising
    new_names: dict[str, dict[str, int]] = {t: {} for t in net.entity_types}
    ends: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for side, names in (("lhs", lhs), ("rhs", rhs)):
        global_ids = np.full(len(names), -1, dtype=np.int64)
        new_index = np.full(len(names), -1, dtype=np.int64)
        for r in np.unique(rel_ids):
            entity_type = getattr(net.relations[int(r)], side)
            rows = np.flatnonzero(rel_ids == r)
            found = model.index(entity_type).find([names[i] for i in rows])  # -1: unknown, hence new
            global_ids[rows] = found
            for row in rows[found < 0].tolist():
                new_index[row] = new_names[entity_type].setdefault(names[row], len(new_names[entity_type]))
        ends[side] = (global_ids, new_index)
    useful = (ends["lhs"][1] >= 0) | (ends["rhs"][1] >= 0)
    if not useful.any():
        raise QueryError("every entity of these edges is already known; there is nothing to embed.")
    log.info(f"embedding {sum(len(v) for v in new_names.values()):,} new entities from {int(useful.sum()):,} "
             f"edges ({int((~useful).sum()):,} edges between known entities ignored)")

    rng = np.random.default_rng(seed)
    config = net.config
    compact: dict[str, _Compact] = {}
    for entity_type in net.entity_types:
        known = np.concatenate([ends[side][0][useful & (ends[side][1] < 0)
                                               & _side_is(net, rel_ids, side, entity_type)]
                                for side in ("lhs", "rhs")])
        compact[entity_type] = _Compact(model, entity_type, known, list(new_names[entity_type]), negatives, rng,
                                        config.model.init_scale)

    training = dataclasses.replace(config.training, all_negs=False, num_batch_negs=min(50, batch_size),
                                   num_uniform_negs=negatives, lr=lr or config.training.lr)
    # the compact tables hold effective vectors (bias included), so the step adds no bias again
    frozen_config = config.replace(model=dataclasses.replace(config.model, global_bias=False))
    net_frozen = type(net).__new__(type(net))
    net_frozen.__dict__.update(net.__dict__)
    net_frozen.config = frozen_config
    step = BatchStep(net_frozen, training, model.tables, {k: torch.zeros_like(v) for k, v in model.tables.items()})
    edges_lhs = {t: c for t, c in compact.items()}
    rows_lhs = np.zeros(len(lhs), dtype=np.int64)
    rows_rhs = np.zeros(len(rhs), dtype=np.int64)
    for r in np.unique(rel_ids):
        spec = net.relations[int(r)]
        chosen = rel_ids == r
        rows_lhs[chosen] = edges_lhs[spec.lhs].rows(ends["lhs"][0][chosen], ends["lhs"][1][chosen])
        rows_rhs[chosen] = compact[spec.rhs].rows(ends["rhs"][0][chosen], ends["rhs"][1][chosen])
    keep = np.flatnonzero(useful)
    data = torch.from_numpy(np.stack([rows_lhs[keep], rel_ids[keep], rows_rhs[keep]], axis=1))
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    with torch.enable_grad():
        for _ in range(epochs):
            for batch in iter_batches(data, net.group_of_relation, False, batch_size, generator):
                _train_batch(step, net, compact, batch, negatives, generator)
    out: NewEntities = {}
    for entity_type, table in compact.items():
        if table.new_names:
            vectors = table.table.embeddings[table.known_count :].clone()
            bias = model.run.biases.get(entity_type)
            if bias is not None:
                vectors = vectors - bias
            out[entity_type] = (table.new_names, vectors.numpy())
    log.info(f"fold-in done in {time.perf_counter() - started:.1f} s")
    return out


def _side_is(net: Any, rel_ids: np.ndarray, side: str, entity_type: str) -> np.ndarray:
    types = np.array([getattr(r, side) == entity_type for r in net.relations])
    return types[rel_ids]


def _train_batch(step: BatchStep, net: Any, compact: dict[str, _Compact], batch: Tensor, negatives: int,
                 generator: torch.Generator) -> None:
    relation = net.relations[int(batch[0, 1])]
    lhs_table, rhs_table = compact[relation.lhs], compact[relation.rhs]
    for rows, size in step.chunk_parts(len(batch)):
        part = batch[rows]
        chunks = len(part) // size
        lhs_neg = torch.randint(lhs_table.known_count, (chunks, min(negatives, lhs_table.known_count)),
                                generator=generator)
        rhs_neg = torch.randint(rhs_table.known_count, (chunks, min(negatives, rhs_table.known_count)),
                                generator=generator)
        result = step.compute(lhs_table.table, rhs_table.table, part[:, 0], part[:, 1], part[:, 2], lhs_neg, rhs_neg,
                              size)
        for table, index, leaf in result.leaves:
            if leaf.grad is None:
                continue
            owner = lhs_table if table is lhs_table.table else rhs_table
            new = index >= owner.known_count
            if new.any():
                rowwise_adagrad_(table.embeddings, table.state, index[new], leaf.grad[new], step.lr)


# ----------------------------------------------------------------------------- output


FILE_FORMATS = {".npy": "npy", ".tsv": "tsv", ".txt": "tsv", ".parquet": "parquet", ".h5": "h5", ".w2v": "w2v"}


def write_new_entities(model: EmbeddingModel, new: NewEntities, out: str | Path,
                       overwrite: bool = False) -> dict[str, Any]:
    """Write new embeddings to a file (by suffix: .npy/.tsv/.parquet/.h5) or to a new run directory
    (a copy of the run plus the new entities, usable by neighbors/predict/score)."""

    out = Path(out)
    if out.suffix in FILE_FORMATS:
        return _write_file(model, new, out, FILE_FORMATS[out.suffix])
    if out.resolve() == model.run.path.resolve():
        raise ShardgraphError("--out must be a new run directory (or a file), not the run itself.")
    with atomic_directory(out, overwrite=overwrite) as temp:
        for item in ("config.toml", "run.json"):
            shutil.copy2(model.run.path / item, temp / item)
        _link_tree(model.run.path / "checkpoint", temp / "checkpoint")
        (temp / ADDED).mkdir()
        for entity_type in model.entity_types:
            dim = model.model.entity_types[entity_type].dim
            previous_ids, previous = model.added.get(entity_type, ([], torch.zeros(0, dim)))
            ids = list(previous_ids)
            stored = previous.numpy() if ids else np.zeros((0, dim), np.float32)
            if entity_type in new:
                new_ids, new_vectors = new[entity_type]
                ids += new_ids
                stored = np.concatenate([stored, new_vectors.astype(np.float32)])
            if ids:
                (temp / ADDED / f"{entity_type}.ids.txt").write_text("".join(i + "\n" for i in ids), encoding="utf-8")
                np.save(temp / ADDED / f"{entity_type}.npy", stored)
    return {"run": str(out), "new_entities": {t: len(v[0]) for t, v in new.items()}}


def _link_tree(source: Path, target: Path) -> None:
    """Copy a directory, hard-linking files where the filesystem allows (checkpoints are immutable)."""
    for path in source.rglob("*"):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)


def _write_file(model: EmbeddingModel, new: NewEntities, out: Path, format: str) -> dict[str, Any]:
    from shardgraph.embeddings.writers import WRITERS, fsync_dir

    if len(new) > 1 and format != "h5":
        raise ShardgraphError(f"new entities of several types ({', '.join(new)}); write them to .h5 or a run.")
    dims = {v.shape[1] for _, v in new.values()}
    total = sum(len(ids) for ids, _ in new.values())
    writer = WRITERS.get(format)(out, dims.pop(), total, np.dtype("float32"))
    for entity_type, (ids, vectors) in new.items():
        writer.begin_type(entity_type, len(ids))
        effective = model.run.effective(entity_type, torch.from_numpy(vectors)).numpy()
        writer.write(pa.array(ids, pa.string()), effective)
    writer.close()
    for temp, final in writer.outputs():
        os.replace(temp, final)
    fsync_dir(out.parent)
    return {"files": [str(final) for _, final in writer.outputs()],
            "new_entities": {t: len(v[0]) for t, v in new.items()}}
