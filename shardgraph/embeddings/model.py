"""`shardgraph.load(RUN)`: a trained model to score edges, predict links and find neighbours.

    model = shardgraph.load("runs/fb15k237")
    model.vectors(["/m/027rn"])                                 # (1, D)
    model.score(["/m/027rn"], "/location/country/form_of_government", ["/m/06cx9"])
    model.predict(lhs="/m/027rn", relation="/location/country/form_of_government", k=10)
    model.neighbors(["/m/027rn"], k=10, metric="cos")
    model.embed_new(edges)                                      # embeddings for nodes unseen in training

Entities are looked up by their string ids through a sorted hash index (16 bytes per
entity); candidates are scored partition by partition in blocks, keeping a running top-k,
so predictions work on tables larger than memory.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from shardgraph.data.dictionary import hash_strings
from shardgraph.data.known import KnownEdges, load_known_edges
from shardgraph.errors import QueryError
from shardgraph.model.model import Direction, EntityTypeSpec
from shardgraph.registry import did_you_mean
from shardgraph.storage.run import ADDED, TrainedRun

SCORE_BLOCK = 1 << 23
READ_ROWS = 1 << 18
"""Rows read at once where a pass over a whole type needs no more (exact neighbours, index builds)."""
SUGGEST_POOL = 2000  # ids compared by difflib for a suggestion
METRICS = ("cos", "dot", "l2")


@dataclass
class Prediction:
    """One ranked candidate."""

    id: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score}


class EntityIndex:
    """String id <-> global id of one entity type, over its partitions and any added entities."""

    def __init__(self, run: TrainedRun, spec: EntityTypeSpec, added: list[str]) -> None:
        # arrow arrays, never one Python str per id: 19M ids take ~0.5 GB here, not ~1.5 GB
        parts = [run.dataset.entity_name_array(spec.name, partition) for partition in range(spec.partitions)]
        parts.append(pa.array(added, pa.large_string()))
        self.trained = spec.count
        self.names = pa.concat_arrays(parts)
        self.type = spec.name
        first, second = hash_strings(self.names) if len(self.names) else (np.zeros(0, np.uint64),) * 2
        order = np.argsort(first, kind="stable")
        self.first, self.second, self.order = first[order], second[order], order

    def __len__(self) -> int:
        return len(self.names)

    def find(self, ids: Sequence[str] | pa.Array) -> np.ndarray:
        """Global ids of string ids, -1 where an id is unknown."""
        query = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids), pa.string())
        out = np.full(len(query), -1, dtype=np.int64)
        if not len(query) or not len(self.first):
            return out
        first, second = hash_strings(query)
        lo = np.searchsorted(self.first, first, side="left")
        hi = np.searchsorted(self.first, first, side="right")
        pos = np.minimum(lo, len(self.first) - 1)
        found = (self.first[pos] == first) & (self.second[pos] == second)
        out[found] = self.order[pos[found]]
        # several names share the first half of the hash: look among those only (an unknown id costs
        # two binary searches, not a scan of every name)
        for i in np.flatnonzero(~found & (hi - lo > 1)).tolist():
            match = np.flatnonzero(self.second[lo[i] : hi[i]] == second[i])
            if len(match):
                out[i] = self.order[lo[i] + match[0]]
        return out

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """Global ids of string ids; a QueryError names an unknown id and the closest known ones."""
        if not ids:
            return np.zeros(0, np.int64)
        query = pa.array(list(ids), pa.string())
        if pc.any(pc.equal(pc.binary_length(query), 0)).as_py():
            raise QueryError("ids must not be empty")
        out = self.find(query)
        for i in np.flatnonzero(out < 0)[:1].tolist():
            raise QueryError(f"unknown {self.type} id {ids[i]!r}.{self.suggest(ids[i])}")
        return out

    def suggest(self, name: str) -> str:
        """' Closest known ids: ...' among the ids sharing the longest prefix with `name`, or ''.

        Scans the names in arrow (a few passes over the column, no Python string per id and no sort),
        so a typo costs well under a second on tens of millions of ids."""
        close: list[str] = []
        for length in sorted({min(len(name), n) for n in (len(name), 12, 8, 5, 3, 2, 1)}, reverse=True):
            if length == 0:
                break
            share = self.names.filter(pc.starts_with(self.names, name[:length]))
            if len(share):
                pool = share.slice(0, SUGGEST_POOL).to_pylist()
                close = difflib.get_close_matches(name, [str(x) for x in pool], n=3, cutoff=0.3)
                if close:
                    break
        return f" Closest known ids: {', '.join(repr(c) for c in close)}." if close else ""

    def name_of(self, ids: np.ndarray) -> list[str]:
        return [str(x) for x in self.names.take(pa.array(ids.astype(np.int64))).to_pylist()]


class EmbeddingModel:
    """A trained run, ready for queries. Use shardgraph.load(RUN)."""

    def __init__(self, run: TrainedRun) -> None:
        self.run = run
        self.model = run.model
        self.tables = run.relation_tables
        self._indexes: dict[str, EntityIndex] = {}
        self._known: dict[str, KnownEdges] = {}
        self.added = self._read_added()

    # ------------------------------------------------------------------ entities
    def _read_added(self) -> dict[str, tuple[list[str], Tensor]]:
        out: dict[str, tuple[list[str], Tensor]] = {}
        root = self.run.path / ADDED
        if not root.is_dir():
            return out
        for name in self.model.entity_types:
            ids_path = root / f"{name}.ids.txt"
            if ids_path.exists():
                ids = ids_path.read_text(encoding="utf-8").split("\n")[:-1]
                vectors = torch.from_numpy(np.load(root / f"{name}.npy")).float()
                out[name] = (ids, vectors)
        return out

    @property
    def entity_types(self) -> list[str]:
        return list(self.model.entity_types)

    @property
    def relations(self) -> list[str]:
        return [r.name for r in self.model.relations]

    def entity_spec(self, entity_type: str | None) -> EntityTypeSpec:
        if entity_type is None:
            if len(self.model.entity_types) > 1:
                raise QueryError(f"the model has entity types {', '.join(self.model.entity_types)}; say which "
                                 "one (type=...).")
            return next(iter(self.model.entity_types.values()))
        if entity_type not in self.model.entity_types:
            known = list(self.model.entity_types)
            raise QueryError(f"unknown entity type {entity_type!r}. Known: {', '.join(known)}."
                             f"{did_you_mean(entity_type, known)}")
        return self.model.entity_types[entity_type]

    def index(self, entity_type: str | None = None) -> EntityIndex:
        spec = self.entity_spec(entity_type)
        if spec.name not in self._indexes:
            added = self.added.get(spec.name, ([], torch.zeros(0)))[0]
            self._indexes[spec.name] = EntityIndex(self.run, spec, added)
        return self._indexes[spec.name]

    def count(self, entity_type: str | None = None) -> int:
        """Entities of a type, trained and added (without building the id index: 1 GB for 19M ids)."""
        spec = self.entity_spec(entity_type)
        return spec.count + len(self.added.get(spec.name, ([], None))[0])

    def relation_id(self, relation: str | int) -> int:
        if isinstance(relation, (int, np.integer)):
            if not 0 <= relation < len(self.model.relations):
                raise QueryError(f"relation id {relation} is out of range (0..{len(self.model.relations) - 1}).")
            return int(relation)
        names = self.relations
        try:
            return names.index(relation)
        except ValueError:
            shown = ", ".join(repr(n) for n in names[:20]) + (" ..." if len(names) > 20 else "")
            raise QueryError(f"unknown relation {relation!r}.{did_you_mean(relation, names)} Known: {shown}") from None

    def gather(self, spec: EntityTypeSpec, ids: np.ndarray) -> Tensor:
        """Effective vectors (n, D) of global ids (trained and added)."""
        out = torch.empty(len(ids), spec.dim)
        trained = ids < spec.count
        if trained.any():
            rows = np.flatnonzero(trained)
            out[torch.from_numpy(rows)] = self.run.gather(spec.name, ids[rows])
        if (~trained).any():
            rows = np.flatnonzero(~trained)
            vectors = self.added[spec.name][1][torch.from_numpy(ids[rows] - spec.count)]
            out[torch.from_numpy(rows)] = self.run.effective(spec.name, vectors)
        return out

    def blocks(self, spec: EntityTypeSpec, rows: int | None = None) -> Iterator[tuple[int, Tensor]]:
        """(first global id, effective vectors) blocks of all entities of a type, trained then added:
        a partition a block, or with `rows`, at most that many rows a block (read from the partition's
        file a slice at a time: a 1.2M-row partition is 600 MB as float32, several copies of it more)."""
        offset = 0
        for partition, count in enumerate(spec.partition_counts):
            if not count:
                yield offset, torch.zeros(0, spec.dim)
            elif rows is None:
                yield offset, self.run.embeddings(spec.name, partition)
            else:
                for start in range(0, count, rows):
                    stop = min(count, start + rows)
                    yield offset + start, self.run.embeddings(spec.name, partition, rows=slice(start, stop))
            offset += count
        if spec.name in self.added:
            added = self.run.effective(spec.name, self.added[spec.name][1])
            step = rows or max(1, len(added))
            for start in range(0, len(added), step):
                yield offset + start, added[start : start + step]

    # ------------------------------------------------------------------ queries
    def vectors(self, ids: Sequence[str], entity_type: str | None = None) -> np.ndarray:
        """Embeddings (n, D) of string ids, as the model uses them."""
        spec = self.entity_spec(entity_type)
        return self.gather(spec, self.index(spec.name).lookup(list(ids))).numpy()

    def score(self, lhs: Sequence[str], relation: str | int | Sequence[str | int], rhs: Sequence[str]) -> np.ndarray:
        """Scores (n,) of edges, exactly as training scores them (the rhs-prediction direction)."""
        lhs, rhs = list(lhs), list(rhs)
        if len(lhs) != len(rhs):
            raise QueryError(f"{len(lhs)} lhs ids but {len(rhs)} rhs ids.")
        rels = [relation] * len(lhs) if isinstance(relation, (str, int)) else list(relation)
        if len(rels) != len(lhs):
            raise QueryError(f"{len(rels)} relations for {len(lhs)} edges.")
        rel_ids = np.array([self.relation_id(r) for r in rels], dtype=np.int64)
        out = np.empty(len(lhs), dtype=np.float32)
        with torch.no_grad():
            for r in np.unique(rel_ids):
                rows = np.flatnonzero(rel_ids == r)
                spec = self.model.relations[int(r)]
                lhs_type, rhs_type = self.model.entity_types[spec.lhs], self.model.entity_types[spec.rhs]
                s = self.gather(lhs_type, self.index(spec.lhs).lookup([lhs[i] for i in rows]))
                d = self.gather(rhs_type, self.index(spec.rhs).lookup([rhs[i] for i in rows]))
                out[rows] = self.model.score(s, torch.full((len(rows),), int(r)), d, self.tables).numpy()
        return out

    def predict(self, *, lhs: str | Sequence[str] | None = None, rhs: str | Sequence[str] | None = None,
                relation: str | int, k: int = 10, exclude_known: bool = True) -> Any:
        """Top-k rhs for (lhs, relation, ?) — or top-k lhs for (?, relation, rhs) — over all entities.

        Returns a list of Predictions for one id, or a list of such lists for a sequence of ids.
        With exclude_known, edges of train/valid/test are not predicted.
        """
        if (lhs is None) == (rhs is None):
            raise QueryError("give exactly one of lhs= and rhs=.")
        if k <= 0:
            raise QueryError(f"k must be a positive number. Got {k} instead.")
        single = isinstance(lhs if lhs is not None else rhs, str)
        known_ids = [lhs] if isinstance(lhs, str) else [rhs] if isinstance(rhs, str) else list(lhs or rhs or [])
        predict = "rhs" if lhs is not None else "lhs"
        r = self.relation_id(relation)
        spec = self.model.relations[r]
        direction = self.model.directions(spec)[0 if predict == "rhs" else 1]
        known_type = self.model.entity_types[spec.lhs if predict == "rhs" else spec.rhs]
        target_type = self.model.entity_types[spec.rhs if predict == "rhs" else spec.lhs]
        ids = self.index(known_type.name).lookup(known_ids)
        with torch.no_grad():
            query = self.model.query(direction, self.gather(known_type, ids), self.tables,
                                     torch.full((len(ids),), r))
            exclude = self._known_pairs(predict, ids, r) if exclude_known else None
            scores, found = self._top_k(query, direction, target_type, r, k, exclude)
        names = self.index(target_type.name)
        results = [[Prediction(name, float(score)) for name, score in
                    zip(names.name_of(found[i][found[i] >= 0]), scores[i][found[i] >= 0].tolist(), strict=True)]
                   for i in range(len(ids))]
        return results[0] if single else results

    def _known_pairs(self, predict: str, ids: np.ndarray, relation: int) -> tuple[np.ndarray, np.ndarray]:
        if predict not in self._known:
            self._known[predict] = load_known_edges(self.run.dataset, predict)
        return self._known[predict].lookup(ids, np.full(len(ids), relation))

    def _top_k(self, query: Tensor, direction: Direction, target: EntityTypeSpec, relation: int, k: int,
               exclude: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """Running top-k over all candidates: (scores (n, k), global ids (n, k); -1 where fewer)."""
        n = query.shape[0]
        best_scores = torch.full((n, k), float("-inf"))
        best_ids = torch.full((n, k), -1, dtype=torch.long)
        comparator = self.model.comparator
        for offset, vectors in self.blocks(target):
            if vectors.shape[0] == 0:
                continue
            if direction.candidate_op is None:
                candidates = comparator.prepare(vectors)
            else:
                candidates = self.model.candidates(direction, vectors, self.tables, relation)
            block = max(1, SCORE_BLOCK // max(1, n))
            for start in range(0, candidates.shape[0], block):
                chunk = candidates[start : start + block]
                scores = comparator.all_pairs(query.unsqueeze(0), chunk.unsqueeze(0))[0]
                if exclude is not None:
                    rows, others = exclude
                    lo, hi = offset + start, offset + start + chunk.shape[0]
                    inside = (others >= lo) & (others < hi)
                    scores[torch.from_numpy(rows[inside]), torch.from_numpy(others[inside] - lo)] = float("-inf")
                best_scores, best_ids = merge_top_k(best_scores, best_ids, scores, offset + start, k)
        best_ids[torch.isinf(best_scores) & (best_scores < 0)] = -1
        return best_scores.numpy(), best_ids.numpy()

    def neighbors(self, ids: str | Sequence[str], k: int = 10, metric: str = "cos", entity_type: str | None = None,
                  index: str | Path | Any | None = None, exclude_self: bool = True) -> Any:
        """The k entities of the same type most similar to each id (cos, dot or l2).

        Exact search, partition by partition, unless `index` (a path from `shardgraph index`
        or a loaded NeighborIndex) gives an approximate one.
        """
        if k <= 0:
            raise QueryError(f"k must be a positive number. Got {k} instead.")
        if metric not in METRICS:
            raise QueryError(f"metric must be one of {', '.join(METRICS)}. Got {metric!r} instead.")
        single = isinstance(ids, str)
        id_list = [ids] if isinstance(ids, str) else list(ids)
        spec = self.entity_spec(entity_type)
        global_ids = self.index(spec.name).lookup(id_list)
        query = self.gather(spec, global_ids)
        extra = 1 if exclude_self else 0
        if index is not None:
            from shardgraph.embeddings.index import NeighborIndex

            loaded = index if isinstance(index, NeighborIndex) else NeighborIndex.load(index)
            loaded.check(self, spec.name, metric)
            scores, found = loaded.search(query.numpy(), k + extra)
        else:
            scores, found = self.exact_neighbors(query, spec, k + extra, metric)
        names = self.index(spec.name)
        results = []
        for i in range(len(id_list)):
            keep = (found[i] >= 0) & ((found[i] != global_ids[i]) if exclude_self else True)
            chosen, values = found[i][keep][:k], scores[i][keep][:k]
            results.append([Prediction(name, float(v)) for name, v in
                            zip(names.name_of(chosen), values.tolist(), strict=True)])
        return results[0] if single else results

    def exact_neighbors(self, query: Tensor, spec: EntityTypeSpec, k: int, metric: str,
                        on_block: Callable[[int], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The exact top k (scores, global ids) of each query among all vectors of the type, read
        READ_ROWS at a time; `on_block(rows)` after each block (a progress bar's update)."""
        n = query.shape[0]
        if metric == "cos":
            query = torch.nn.functional.normalize(query, dim=1)
        best_scores = torch.full((n, k), float("-inf"))
        best_ids = torch.full((n, k), -1, dtype=torch.long)
        for offset, vectors in self.blocks(spec, rows=READ_ROWS):
            if metric == "cos":
                vectors = torch.nn.functional.normalize(vectors, dim=1)
            block = max(1, SCORE_BLOCK // max(1, n))
            for start in range(0, vectors.shape[0], block):
                chunk = vectors[start : start + block]
                if metric == "l2":
                    scores = -torch.cdist(query, chunk)
                else:
                    scores = query @ chunk.t()
                best_scores, best_ids = merge_top_k(best_scores, best_ids, scores, offset + start, k)
            if on_block is not None:
                on_block(vectors.shape[0])
        if metric == "l2":
            best_scores = -best_scores  # report distances for l2
        return best_scores.numpy(), best_ids.numpy()

    # ------------------------------------------------------------------ other libraries
    def to_pandas(self, entity_type: str | None = None) -> Any:
        """Embeddings as a pandas DataFrame indexed by id; see shardgraph.embeddings.interop."""
        from shardgraph.embeddings.interop import to_pandas

        return to_pandas(self, entity_type)

    def to_pyg(self, num_nodes: int | dict[str, int] | None = None) -> Any:
        """Embeddings as `x` of a PyTorch Geometric Data / HeteroData, in node order."""
        from shardgraph.embeddings.interop import to_pyg

        return to_pyg(self, num_nodes)

    def to_keyed_vectors(self, entity_type: str | None = None) -> Any:
        """Embeddings as gensim KeyedVectors, built in memory."""
        from shardgraph.embeddings.interop import to_keyed_vectors

        return to_keyed_vectors(self, entity_type)

    def embed_new(self, edges: str | Path | Sequence[tuple[str, str, str]], **options: Any) -> dict[str, Any]:
        """Embeddings for entities absent from training, from their edges to known entities
        (fold-in: only the new rows are optimised, the trained model is frozen). Returns
        {entity type: (ids, vectors (m, D))}; see shardgraph.embeddings.foldin.fold_in."""
        from shardgraph.embeddings.foldin import fold_in

        return fold_in(self, edges, **options)


def merge_top_k(best_scores: Tensor, best_ids: Tensor, scores: Tensor, first_id: int, k: int) -> tuple[Tensor, Tensor]:
    """The running top-k (n, k) merged with a block of scores (n, m) of ids first_id .. first_id + m - 1.

    The block's own top k first, then the merge of 2k columns: concatenating the whole block (and an
    int64 id for each of its n x m scores) made the merge twice the matrix product's time."""
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    merged_scores = torch.cat([best_scores, top.values], dim=1)
    merged_ids = torch.cat([best_ids, top.indices + first_id], dim=1)
    top = torch.topk(merged_scores, min(k, merged_scores.shape[1]), dim=1)
    return top.values, merged_ids.gather(1, top.indices)


def load(run: str | Path, dataset: str | Path | None = None) -> EmbeddingModel:
    """Open a trained run directory for queries."""
    return EmbeddingModel(TrainedRun(run, dataset=dataset))


