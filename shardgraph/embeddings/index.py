"""`shardgraph index`: a persistent approximate nearest-neighbour index (faiss) of a run's embeddings.

    INDEX/index.faiss   the faiss index (flat, IVF or HNSW)
    INDEX/meta.json     run, entity type, metric, kind, size, and the recall@10 measured at build

Cosine similarity is inner product on normalised vectors; l2 is euclidean distance.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from shardgraph.embeddings.model import READ_ROWS
from shardgraph.errors import QueryError, ShardgraphError
from shardgraph.utils.atomic import atomic_directory
from shardgraph.utils.npy import file_checksum

KINDS = ("flat", "ivf", "ivf-sq8", "hnsw")
"""ivf-sq8: IVF whose lists hold 8-bit scalar-quantised vectors: a quarter of ivf's memory (19M x 128
dimensions: 2.4 GB instead of 9.7 GB), for an index that must fit beside a memory limit."""


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ShardgraphError("nearest-neighbour indexes need faiss: pip install 'shardgraph[export]'") from None
    return faiss


def _prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cos":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return vectors


class NeighborIndex:
    """A faiss index over the entities of one type, in global id order."""

    def __init__(self, index: Any, meta: dict[str, Any]) -> None:
        self.index = index
        self.meta = meta

    @classmethod
    def load(cls, path: str | Path) -> NeighborIndex:
        path = Path(path)
        if not (path / "meta.json").is_file() or not (path / "index.faiss").is_file():
            raise QueryError(f"{path} is not a shardgraph index (make one with `shardgraph index`).")
        faiss = _faiss()
        try:
            meta = json.loads((path / "meta.json").read_text())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            raise QueryError(f"{path / 'meta.json'} is corrupt ({exc}); rebuild the index.") from None
        expected = meta.get("index_xxh3")
        found = file_checksum(path / "index.faiss")
        if expected is not None and found != expected:
            raise QueryError(f"{path / 'index.faiss'} does not match its checksum (xxh3 {found}, meta.json says "
                             f"{expected}): the index is damaged; rebuild it.")
        try:
            index = faiss.read_index(str(path / "index.faiss"))
        except RuntimeError as exc:
            raise QueryError(f"{path / 'index.faiss'} cannot be read ({exc}); rebuild the index.") from None
        if meta["kind"].startswith("ivf"):
            index.nprobe = meta["nprobe"]
        elif meta["kind"] == "hnsw":
            index.hnsw.efSearch = meta["ef_search"]
        return cls(index, meta)

    def check(self, model: Any, entity_type: str, metric: str) -> None:
        if self.meta["entity_type"] != entity_type:
            raise QueryError(f"the index holds type {self.meta['entity_type']!r}, not {entity_type!r}.")
        if self.meta["metric"] != metric:
            raise QueryError(f"the index was built for metric {self.meta['metric']!r}; ask for that metric or "
                             "build another index.")
        if self.meta["count"] != model.count(entity_type):
            raise QueryError(f"the index holds {self.meta['count']} entities but the model has "
                             f"{model.count(entity_type)}; rebuild it.")

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores or l2 distances (n, k), global ids (n, k), -1 where fewer)."""
        distances, ids = self.index.search(_prepare(query, self.meta["metric"]), k)
        if self.meta["metric"] == "l2":
            distances = np.sqrt(np.maximum(distances, 0))
        return distances, ids


def _sample_vectors(model: Any, spec: Any, ids: np.ndarray) -> np.ndarray:
    """Vectors of some global ids (sorted, read partition by partition), as float32."""
    return np.ascontiguousarray(model.gather(spec, np.sort(ids)).numpy(), dtype=np.float32)


MAX_NLIST = 4096
"""The most inverted lists an ivf index gets (4 sqrt(n) below 1M vectors)."""


def build_index(model: Any, out: str | Path, *, kind: str = "hnsw", metric: str = "cos",
                entity_type: str | None = None, overwrite: bool = False, target_recall: float = 0.95,
                recall_queries: int = 1000, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Build and save an index whose search setting (HNSW efSearch, IVF nprobe) is the cheapest
    that reaches `target_recall` of recall@10 against exact search, measured on `recall_queries`
    entities drawn at random.

    Vectors are read and added READ_ROWS at a time: memory is the index itself plus a few copies of
    that many vectors, never a float32 copy of the whole table (19M x 128 dimensions: 9.7 GB).
    The progress bar counts vectors over every pass (IVF: assign, add; then the exact search of
    the tuning), so its ETA covers the whole build.
    """
    faiss = _faiss()
    if kind not in KINDS:
        raise QueryError(f"--kind must be one of {', '.join(KINDS)}. Got {kind!r} instead.")
    if metric not in ("cos", "dot", "l2"):
        raise QueryError(f"--metric must be cos, dot or l2. Got {metric!r} instead.")
    if not 0 < target_recall <= 1:
        raise QueryError(f"--target-recall must be in (0, 1]. Got {target_recall} instead.")
    spec = model.entity_spec(entity_type)
    started = time.perf_counter()
    n, dim = model.count(spec.name), spec.dim
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    meta: dict[str, Any] = {"run": str(model.run.path), "entity_type": spec.name, "metric": metric, "kind": kind,
                            "count": n, "dim": dim}
    if kind == "flat":
        index = faiss.IndexFlat(dim, faiss_metric)
    elif kind.startswith("ivf"):
        # 4 sqrt(n) lists, at most MAX_NLIST: assigning every vector to its list costs n x nlist x D multiply-adds
        # (19M vectors into 17k lists: over ten minutes on 2 cores); the search then probes more of fewer,
        # longer lists, tuned below to the same recall
        nlist = max(1, min(int(4 * math.sqrt(n)), MAX_NLIST, n // 39 or 1))
        quantizer = faiss.IndexFlat(dim, faiss_metric)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss_metric)
        rng = np.random.default_rng(seed)
        sample = rng.choice(n, size=min(n, max(nlist * 39, 50_000)), replace=False)
        index.train(_prepare(_sample_vectors(model, spec, sample), metric))
        meta["nlist"] = nlist
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss_metric)
        index.hnsw.efConstruction = 100
    passes = (2 if kind.startswith("ivf") else 1) + (kind != "flat")
    bar = tqdm(total=n * passes, unit=" vectors", unit_scale=True, disable=None if progress else True,
               desc=f"index {kind}", mininterval=1)
    if kind.startswith("ivf"):
        meta["largest_list"] = _add_presized(faiss, index, model, spec, metric, bar)
    else:
        bar.set_postfix_str("add", refresh=False)
        for _, block in model.blocks(spec, rows=READ_ROWS):  # global id order: faiss numbers the vectors as they come
            if len(block):
                index.add(_prepare(block.numpy(), metric))
            bar.update(len(block))
    meta["build_s"] = round(time.perf_counter() - started, 3)
    if kind == "flat":
        meta["recall@10"] = 1.0
    else:
        started = time.perf_counter()
        import torch

        rng = np.random.default_rng(seed + 1)
        sample_ids = np.sort(rng.choice(n, size=min(recall_queries, n), replace=False))
        queries = _prepare(_sample_vectors(model, spec, sample_ids), metric)
        # exact search as `neighbors` does it without an index (k + 1: the query itself is dropped)
        bar.set_postfix_str("exact search for the tuning", refresh=False)
        _, truth = model.exact_neighbors(torch.from_numpy(queries), spec, 11, metric, on_block=bar.update)
        bar.set_postfix_str("tuning", refresh=True)
        setting, meta["recall@10"], meta["tuning"] = _tune(index, kind, queries, sample_ids, truth, target_recall)
        meta["ef_search" if kind == "hnsw" else "nprobe"] = setting
        meta["target_recall"] = target_recall
        meta["tune_s"] = round(time.perf_counter() - started, 3)
    bar.close()
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as temp:  # an old index stays whole until the new one is
        faiss.write_index(index, str(temp / "index.faiss"))
        meta["index_xxh3"] = file_checksum(temp / "index.faiss")  # faiss itself trusts the bytes it reads
        (temp / "meta.json").write_text(json.dumps(meta, indent=1))
    return {**meta, "path": str(out)}


def _add_presized(faiss: Any, index: Any, model: Any, spec: Any, metric: str, bar: Any) -> int:
    """Add every vector of the type to an IVF index, each inverted list allocated once at its final
    size; returns the longest list's length.

    faiss's own `add` appends to lists that grow by doubling: at 19M vectors the lists of a 2.6 GB
    ivf-sq8 index held over 5 GB. Here a first pass over the table assigns each vector to its list
    (8 bytes a vector), each list is reserved at its count, and a second pass encodes and appends
    (`add_core` with the assignment): memory is the index, the assignment and READ_ROWS vectors.
    """
    n = model.count(spec.name)
    assign = np.empty(n, dtype=np.int64)  # add_core takes faiss's idx_t
    bar.set_postfix_str("assign to lists", refresh=False)
    for offset, block in model.blocks(spec, rows=READ_ROWS):
        if len(block):
            _, nearest = index.quantizer.search(_prepare(block.numpy(), metric), 1)
            assign[offset:offset + len(block)] = nearest[:, 0]
        bar.update(len(block))
    counts = np.bincount(assign, minlength=index.nlist)
    lists = faiss.downcast_InvertedLists(index.invlists)
    for list_no in np.flatnonzero(counts).tolist():
        # std::vector keeps its capacity when it shrinks: sized to the count, then emptied
        lists.resize(list_no, int(counts[list_no]))
        lists.resize(list_no, 0)
    bar.set_postfix_str("add", refresh=False)
    for offset, block in model.blocks(spec, rows=READ_ROWS):  # global id order: faiss numbers the vectors as they come
        if len(block):
            vectors = _prepare(block.numpy(), metric)
            index.add_core(len(vectors), faiss.swig_ptr(vectors), None,
                           faiss.swig_ptr(assign[offset:offset + len(block)]))
        bar.update(len(block))
    if index.ntotal != n:
        raise ShardgraphError(f"the index holds {index.ntotal} vectors after adding {n}")
    return int(counts.max()) if n else 0


def _set_search(index: Any, kind: str, value: int) -> None:
    if kind == "hnsw":
        index.hnsw.efSearch = value
    else:
        index.nprobe = value


def _tune(index: Any, kind: str, sample: np.ndarray, sample_ids: np.ndarray, exact: np.ndarray, target: float,
          k: int = 10) -> tuple[int, float, list[dict[str, float]]]:
    """The smallest efSearch / nprobe (doubling) whose recall@k against exact search reaches the
    target, with its recall and the (setting, recall, ms/query) of every setting tried.

    The queries are indexed entities and, as in `neighbors`, each one's own id does not count:
    its top k are the k best other entities (finding itself would flatter the recall). `exact`
    holds the exact top k + 1 of each query."""

    def others(found: np.ndarray) -> list[set[int]]:
        return [set([i for i in row if i != own and i >= 0][:k]) for row, own in
                zip(found.tolist(), sample_ids.tolist(), strict=True)]

    truth = others(exact)
    if kind == "hnsw":
        settings = [16 * 2**i for i in range(8)]  # 16 .. 2048
    else:
        nlist = index.nlist
        settings = sorted({min(nlist, 2**i) for i in range(int(math.log2(nlist)) + 2)})
    tried: list[dict[str, float]] = []
    chosen, recall = settings[-1], 0.0
    for value in settings:
        _set_search(index, kind, value)
        started = time.perf_counter()
        _, found = index.search(sample, k + 1)
        ms = (time.perf_counter() - started) / len(sample) * 1e3
        recall = sum(len(t & f) for t, f in zip(truth, others(found), strict=True)) / max(1, sum(map(len, truth)))
        tried.append({"setting": value, "recall@10": round(recall, 4), "ms_per_query_batched": round(ms, 4)})
        chosen = value
        if recall >= target:
            break
    _set_search(index, kind, chosen)
    return chosen, round(recall, 4), tried
