"""Walks as an edge source: the skip-gram pairs of a graph's walks, written as a dataset of `context` edges.

`shardgraph train` with a `[walks]` section walks the training graph of the dataset, turns each
block of walks into (centre, context) pairs within the window and appends them, as edges of a
`context` relation, to the P×P buckets of a derived dataset in RUN/walks/ (same entity types,
partitions and dictionaries as the source; the same format as `shardgraph import` writes). The
normal trainer then trains it. Memory is bounded by one block of walks and its pairs.

With several entity types (metapath2vec), a pair of a type-a centre and a type-b context is an
edge of relation `context_<a>_<b>`, so each type keeps its own embedding table and negatives.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from shardgraph.config import Config
from shardgraph.data.dataset import EDGE_DTYPE, MANIFEST, Dataset
from shardgraph.data.importer import _Buckets
from shardgraph.errors import ConfigError
from shardgraph.utils.atomic import atomic_directory
from shardgraph.walks.kernels import walk_kernels
from shardgraph.walks.skipgram import keep_probabilities, subsample, window_pairs, window_rows
from shardgraph.walks.walker import Metapath, RelationEnds, WalkBlock, Walker, WalkGraph, parse_metapath

log = logging.getLogger(__name__)

WALKS_DIR = "walks"
CONTEXT_RELATION = "context"


@dataclass
class WalkCorpusSummary:
    """What a walk corpus holds; kept in its manifest under "walk_stats"."""

    walks: int
    pairs: int
    isolated_nodes: int
    nodes: int
    walk_seconds: float
    seconds: float


@dataclass(frozen=True)
class _GraphView:
    """The graph the walker reads: the CSR, with or without its weights."""

    indptr: np.ndarray
    indices: np.ndarray
    arc_relation: np.ndarray
    weights: np.ndarray | None
    type_offsets: np.ndarray


def context_relations(type_names: list[str]) -> list[tuple[str, str, str]]:
    """(name, lhs type, rhs type) of the context relations; relation id = lhs index * T + rhs index."""
    if len(type_names) == 1:
        return [(CONTEXT_RELATION, type_names[0], type_names[0])]
    return [(f"{CONTEXT_RELATION}_{a}_{b}", a, b) for a in type_names for b in type_names]


def walk_key(config: Config, dataset: Dataset) -> dict[str, Any]:
    """What the walks depend on: a corpus built for the same key is reused (e.g. by --resume)."""
    key = {"source": str(dataset.path.resolve()), "source_created": dataset.manifest.get("created"),
           "walks": dataclasses.asdict(config.walks)}
    result: dict[str, Any] = json.loads(json.dumps(key))  # as read back from a manifest (lists, not tuples)
    return result


def metapaths_of(config: Config, dataset: Dataset) -> list[Metapath]:
    relations = [RelationEnds(r.name, r.lhs, r.rhs) for r in dataset.relations]
    return [parse_metapath(text, list(dataset.entity_types), relations, config.walks.directed,
                           key=f"walks.metapaths[{i}]")
            for i, text in enumerate(config.walks.metapaths)]


def make_walker(config: Config, dataset: Dataset) -> Walker:
    """The walker of the config's [walks] over the dataset's training graph."""
    from shardgraph.data.csr import load_csr

    w = config.walks
    metapaths = metapaths_of(config, dataset)  # bad metapaths fail before the CSR is built
    graph = load_csr(dataset, split="train", directed=w.directed)
    view: WalkGraph = _GraphView(graph.indptr, graph.indices, graph.arc_relation,
                                 graph.weights if w.weighted else None, graph.type_offsets)
    return Walker(view, walk_length=w.walk_length, p=w.p, q=w.q, metapaths=metapaths, seed=w.seed,
                  threads=w.threads, block_walks=w.block_walks)


def build_walk_corpus(config: Config, dataset: Dataset, out: str | Path, *, progress: bool = True,
                      overwrite: bool = False) -> Dataset:
    """Walk the dataset's training graph and write the skip-gram pairs as the dataset `out`."""
    started = time.perf_counter()
    w = config.walks
    walker = make_walker(config, dataset)
    if walker.isolated:
        log.warning(f"{walker.isolated:,} of {walker.num_nodes:,} nodes have no neighbour in the training edges: "
                    "they get no walks, and their embeddings stay as initialised")
    per_round = walker.walks_per_round()
    if per_round == 0:
        raise ConfigError("walks: no node can start a walk (no node of the metapaths' first types has a neighbour).")
    walk_started = time.perf_counter()
    keep = None
    spill = Path(out).parent / f".{Path(out).name}.walks-{os.getpid()}.tmp"
    spill_dtype = np.int32 if walker.num_nodes < 2**31 else np.int64
    if w.sample > 0:
        # a first pass counts the nodes' occurrences; its walks are spilled to a temporary file (block by block,
        # 4 bytes a node) for the second pass to read back rather than walk again
        counts = np.zeros(walker.num_nodes, dtype=np.int64)
        spill.parent.mkdir(parents=True, exist_ok=True)
        with open(spill, "wb") as f:
            for block in walker.blocks(w.walks_per_node):
                counts += np.bincount(block.walks[block.walks >= 0], minlength=walker.num_nodes)
                _spill_block(f, block, spill_dtype)
        keep = keep_probabilities(counts, w.sample)
        log.info(f"subsampling frequent nodes (sample {w.sample:g}) keeps {float(keep @ counts) / counts.sum():.1%} "
                 "of the walks' nodes")
    walk_seconds = time.perf_counter() - walk_started
    try:
        return _write_corpus(config, dataset, out, walker, keep, spill if keep is not None else None, spill_dtype,
                             started, walk_seconds, progress, overwrite)
    finally:
        spill.unlink(missing_ok=True)


def _spill_block(f: Any, block: WalkBlock, dtype: type) -> None:
    """Append a block of walks to a spill file: (rows, columns) int64, then the walks and their lengths as
    `dtype` (int32 where every node id fits)."""
    np.array(block.walks.shape, dtype=np.int64).tofile(f)
    block.walks.astype(dtype).tofile(f)
    block.lengths.astype(dtype).tofile(f)


def _read_spill(path: Path, dtype: type) -> Iterator[WalkBlock]:
    """The blocks _spill_block wrote, in order, one at a time."""
    with open(path, "rb") as f:
        while True:
            shape = np.fromfile(f, dtype=np.int64, count=2)
            if len(shape) < 2:
                return
            rows, columns = int(shape[0]), int(shape[1])
            walks = np.fromfile(f, dtype=dtype, count=rows * columns).astype(np.int64).reshape(rows, columns)
            yield WalkBlock(walks, np.fromfile(f, dtype=dtype, count=rows).astype(np.int64))


def _write_corpus(config: Config, dataset: Dataset, out: str | Path, walker: Walker, keep: np.ndarray | None,
                  spill: Path | None, spill_dtype: type, started: float, walk_seconds: float, progress: bool,
                  overwrite: bool) -> Dataset:
    """The second pass of build_walk_corpus: the walks (walked now, or read back from `spill`) as pairs."""
    w = config.walks
    type_names = list(dataset.entity_types)
    type_info = list(dataset.entity_types.values())
    num_types = len(type_names)
    relations = context_relations(type_names)
    num_partitions = dataset.num_partitions
    offsets = np.asarray(walker.type_offsets)
    total_walks = walker.walks_per_round() * w.walks_per_node
    pairs_total = 0
    per_relation = np.zeros(len(relations), dtype=np.int64)
    with atomic_directory(out, overwrite=overwrite) as root:
        for entry in dataset.manifest.get("dictionaries", []):
            _link_or_copy(dataset.path / entry["file"], root / entry["file"])
        buckets = _Buckets(root, "train", num_partitions, ())
        bar = tqdm(total=total_walks, unit=" walks", unit_scale=True, disable=None if progress else True,
                   desc=f"{w.method} walks", mininterval=0.5)
        direct = num_types == 1 and num_partitions == 1 and walk_kernels() is not None
        row_buffer: np.ndarray | None = None
        block_started = time.perf_counter()
        blocks = _read_spill(spill, spill_dtype) if spill is not None else walker.blocks(w.walks_per_node)
        for block_index, block in enumerate(blocks):
            walk_seconds += time.perf_counter() - block_started
            rng = np.random.default_rng([w.seed, block_index])
            if keep is not None:
                block = WalkBlock(*subsample(block.walks, block.lengths, keep, rng))
            # one edge per pair of positions: the trainer learns both directions of every edge (dynamic relations)
            if direct:  # one type, one partition: the compiled walker writes the bucket rows themselves
                if row_buffer is None:  # room for the pairs of any block, reused
                    row_buffer = np.empty((w.block_walks * w.walk_length * w.window, 3), dtype=EDGE_DTYPE)
                rows = window_rows(block.walks, block.lengths, w.window, w.shrink_window, rng, False, row_buffer)
                buckets.append(np.zeros(0, np.int64), np.zeros(0, np.int64), rows, {})
                per_relation[0] += len(rows)
            else:
                centre, context = window_pairs(block.walks, block.lengths, w.window, w.shrink_window, rng,
                                               both_directions=False)
                lhs_type, lhs_global = _entity_of(offsets, centre, num_types)
                rhs_type, rhs_global = _entity_of(offsets, context, num_types)
                lhs_part, lhs_local = _partition_of(type_info, lhs_type, lhs_global)
                rhs_part, rhs_local = _partition_of(type_info, rhs_type, rhs_global)
                rows = np.empty((len(centre), 3), dtype=EDGE_DTYPE)
                rows[:, 0] = lhs_local
                rows[:, 1] = lhs_type * num_types + rhs_type if num_types > 1 else 0
                rows[:, 2] = rhs_local
                buckets.append(lhs_part, rhs_part, rows, {})
                per_relation += np.bincount(rows[:, 1], minlength=len(relations))
            pairs_total += len(rows)
            bar.update(len(block.lengths))
            bar.set_postfix_str(f"{pairs_total:,} pairs", refresh=False)
            block_started = time.perf_counter()
        bar.close()
        summary = WalkCorpusSummary(walks=total_walks, pairs=pairs_total, isolated_nodes=walker.isolated,
                                    nodes=walker.num_nodes, walk_seconds=round(walk_seconds, 3),
                                    seconds=round(time.perf_counter() - started, 3))
        source = dataset.manifest
        manifest: dict[str, Any] = {
            **{k: source[k] for k in ("format", "format_version", "shardgraph_version", "num_partitions",
                                      "entity_types", "dictionaries") if k in source},
            "created": source.get("created"),
            "relations_declared": True,
            "relations": [{"name": name, "lhs": lhs, "rhs": rhs,
                           "edges": {"train": int(per_relation[i]), "valid": 0, "test": 0}}
                          for i, (name, lhs, rhs) in enumerate(relations)],
            "unseen_policy": source.get("unseen_policy", "keep"),
            "splits": {"train": {"edges": pairs_total, "dropped_edges": 0, "sources": [str(dataset.path)],
                                 "buckets": buckets.close()},
                       "valid": {"edges": 0, "dropped_edges": 0, "sources": [], "buckets": []},
                       "test": {"edges": 0, "dropped_edges": 0, "sources": [], "buckets": []}},
            "walks": walk_key(config, dataset),
            "walk_stats": dataclasses.asdict(summary),
        }
        (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    log.info(f"{w.method}: {total_walks:,} walks of length {w.walk_length} -> {pairs_total:,} pairs (window "
             f"{w.window}) in {summary.seconds:.1f} s (walking {walk_seconds:.1f} s)")
    return Dataset(out)


def walk_corpus(config: Config, dataset: Dataset, run_dir: Path, *, progress: bool = True) -> Dataset:
    """The walk corpus of a run, RUN/walks/: reused when it was built for the same walks, else (re)built."""
    out = run_dir / WALKS_DIR
    if (out / MANIFEST).is_file():
        try:
            existing = Dataset(out)
        except Exception:  # a corpus of another version: build it again
            existing = None
        if existing is not None and existing.manifest.get("walks") == walk_key(config, dataset):
            log.info(f"reusing the walks in {out}")
            return existing
    run_dir.mkdir(parents=True, exist_ok=True)
    return build_walk_corpus(config, dataset, out, progress=progress, overwrite=True)


def training_config(config: Config, corpus: Dataset) -> Config:
    """The config that trains the corpus: its context relations (dynamic: both directions), dot products."""
    return config.replace(
        data=dataclasses.replace(config.data, dataset=str(corpus.path)),
        relations=(),
        model=dataclasses.replace(config.model, dynamic_relations="auto"),
    )


def is_walk_corpus(dataset: Dataset) -> bool:
    return "walks" in dataset.manifest


def _entity_of(type_offsets: np.ndarray, nodes: np.ndarray, num_types: int) -> tuple[np.ndarray, np.ndarray]:
    """(type index, global id within the type) of node ids."""
    if num_types == 1:
        return np.zeros(len(nodes), dtype=np.int64), nodes
    types = np.searchsorted(type_offsets, nodes, side="right") - 1
    return types, nodes - type_offsets[types]


def _partition_of(type_info: list[Any], types: np.ndarray, global_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(partition, local id) of global ids of the given types (global = offsets[partition] + local)."""
    partitions = np.zeros(len(global_ids), dtype=np.int64)
    if all(info.partitions == 1 for info in type_info):
        return partitions, global_ids
    local = np.asarray(global_ids, dtype=np.int64).copy()
    for t, info in enumerate(type_info):
        if info.partitions == 1:
            continue
        rows = np.flatnonzero(types == t) if len(type_info) > 1 else slice(None)
        part = np.searchsorted(info.offsets, global_ids[rows], side="right") - 1
        partitions[rows] = part
        local[rows] = global_ids[rows] - info.offsets[part]
    return partitions, local


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
