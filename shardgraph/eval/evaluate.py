"""`shardgraph eval`: link-prediction metrics of a trained run on a split.

    metrics = shardgraph.evaluate("runs/fb15k237", split="test", filtered=True)

Every edge is scored in both directions (rank the rhs given lhs and relation, and the lhs
given rhs and relation); the metrics average over both.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from shardgraph.data.dataset import LHS, REL, RHS
from shardgraph.data.known import KnownEdges, load_known_edges
from shardgraph.errors import ShardgraphError
from shardgraph.eval.ranking import RankCounts, count_block, metrics_from_counts
from shardgraph.model.model import Direction, EntityTypeSpec
from shardgraph.storage.run import TrainedRun
from shardgraph.utils.arrays import unique_sorted
from shardgraph.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

SCORE_BLOCK = 1 << 24  # elements of one score matrix (64 MiB of float32)
KnownLookup = Callable[[np.ndarray, int, int], tuple[np.ndarray, np.ndarray]]
"""known(rows, lo, hi): the (position in rows, id) pairs of the known edges of the split rows `rows`
whose other end's id is in [lo, hi)."""


@dataclass
class _Group:
    """Edges (rows of the split) that share a scoring setup for one direction."""

    rows: np.ndarray
    direction: Direction
    known_type: EntityTypeSpec
    target_type: EntityTypeSpec
    relation: int | None  # the one relation, when candidates depend on it (per-relation operators)


class Evaluator:
    """Ranks the edges of a split against all (or sampled) candidates, streaming over partitions."""

    def __init__(self, run: TrainedRun, *, filtered: bool = True, negatives: int = 0, batch_size: int = 512,
                 seed: int = 0, progress: bool = False, candidates: str = "all") -> None:
        if candidates not in ("all", "partition"):
            raise ShardgraphError(f"candidates must be all or partition. Got {candidates!r} instead.")
        self.candidates = candidates
        self.run = run
        self.model = run.model
        self.filtered = filtered
        self.negatives = negatives
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.progress = progress
        self.tables = run.relation_tables
        self._known: dict[str, KnownEdges] = {}
        self.scored = 0  # query x candidate scores computed so far (what the progress bar counts)
        self._bar: Any = None

    # ------------------------------------------------------------------ set-up
    def _known_index(self, predict: str) -> KnownEdges:
        if predict not in self._known:
            self._known[predict] = load_known_edges(self.run.dataset, predict, progress=self.progress)
        return self._known[predict]

    def _groups(self, edges: np.ndarray, predict: str) -> list[_Group]:
        model = self.model
        out: list[_Group] = []
        by_key: dict[tuple[Any, ...], list[np.ndarray]] = {}
        rel_of_edge = edges[:, REL]
        for rel in np.unique(rel_of_edge):
            spec = model.relations[int(rel)]
            direction = model.directions(spec)[0 if predict == "rhs" else 1]
            known, target = (spec.lhs, spec.rhs) if predict == "rhs" else (spec.rhs, spec.lhs)
            per_relation = direction.candidate_op is not None
            key = (direction, known, target, int(rel) if per_relation else None)
            by_key.setdefault(key, []).append(np.flatnonzero(rel_of_edge == rel))
        for (direction, known, target, relation), parts in by_key.items():
            out.append(_Group(np.sort(np.concatenate(parts)), direction, model.entity_types[known],
                              model.entity_types[target], relation))
        return out

    def work(self, edges: np.ndarray, predict: str) -> int:
        """The number of query x candidate scores that ranking `edges` in one direction computes."""
        total = 0
        for group in self._groups(edges, predict):
            n = len(group.rows)
            if self.negatives > 0:
                total += n * self.negatives
            elif self.candidates == "all":
                total += n * group.target_type.count
            else:  # each edge against its true end's partition
                target_col = RHS if predict == "rhs" else LHS
                sizes = np.asarray(group.target_type.partition_counts, dtype=np.int64)
                starts = np.concatenate([[0], np.cumsum(sizes)])
                partition = np.searchsorted(starts, edges[group.rows, target_col], side="right") - 1
                total += int(sizes[partition].sum())
        return total

    def _tick(self, scores: int) -> None:
        self.scored += scores
        if self._bar is not None:
            self._bar.update(scores)

    # ------------------------------------------------------------------ ranking
    def rank(self, edges: np.ndarray, predict: str) -> RankCounts:
        """Rank counts of one direction for edges (n, 3) of global ids."""
        counts = RankCounts.zeros(len(edges))
        known_col, target_col = (LHS, RHS) if predict == "rhs" else (RHS, LHS)
        for group in self._groups(edges, predict):
            sub = edges[group.rows]
            rel = torch.from_numpy(sub[:, REL])
            query = self.model.query(group.direction, self.run.gather(group.known_type.name, sub[:, known_col]),
                                     self.tables, rel)
            true_ids = sub[:, target_col]
            true_vectors = self._candidates(group, self.run.gather(group.target_type.name, true_ids), rel)
            true_scores = self.model.comparator.pairs(query, true_vectors)
            known = None
            if self.filtered:
                index = self._known_index(predict)

                def known(rows: np.ndarray, lo: int, hi: int, index: KnownEdges = index,
                          sub: np.ndarray = sub) -> tuple[np.ndarray, np.ndarray]:
                    return index.lookup(sub[rows, known_col], sub[rows, REL], lo, hi)
            group_counts = RankCounts.zeros(len(sub))
            if self.negatives > 0:
                self._rank_sampled(group, query, rel, true_ids, true_scores, known, group_counts)
            else:
                self._rank_all(group, query, rel, true_ids, true_scores, known, group_counts)
            counts.greater[group.rows] = group_counts.greater
            counts.equal[group.rows] = group_counts.equal
            counts.candidates[group.rows] = group_counts.candidates
        return counts

    def _candidates(self, group: _Group, vectors: Tensor, rel: Tensor) -> Tensor:
        """Candidate transform of the group (per-relation operators transform the candidates)."""
        if group.direction.candidate_op is None:
            return self.model.comparator.prepare(vectors)
        assert group.relation is not None
        return self.model.candidates(group.direction, vectors, self.tables, group.relation)

    def _rank_all(self, group: _Group, query: Tensor, rel: Tensor, true_ids: np.ndarray, true_scores: Tensor,
                  known: KnownLookup | None, counts: RankCounts) -> None:
        spec = group.target_type
        offset = 0
        n = len(true_ids)
        batch = max(1, min(self.batch_size, n))
        for partition, size in enumerate(spec.partition_counts):
            if size == 0:
                continue
            # candidates="partition": only the partition of each edge's true end (PBG's all_negs protocol)
            scope = np.arange(n) if self.candidates == "all" else \
                np.flatnonzero((true_ids >= offset) & (true_ids < offset + size))
            if len(scope) == 0:
                offset += size
                continue
            entities = self._candidates(group, self.run.embeddings(spec.name, partition), rel)
            block = max(1, SCORE_BLOCK // batch)
            for start in range(0, len(scope), batch):
                rows = scope[start : start + batch]
                # known edges of this batch into this partition only: memory bounded by the batch,
                # not by the degrees of the whole split's query ends
                pairs = known(rows, offset, offset + size) if known is not None else None
                for c0 in range(0, size, block):
                    c1 = min(size, c0 + block)
                    scores = self.model.comparator.all_pairs(query[rows].unsqueeze(0),
                                                             entities[c0:c1].unsqueeze(0))[0]
                    local_true = true_ids[rows] - offset - c0
                    hit = (local_true >= 0) & (local_true < c1 - c0)
                    excluded_rows, excluded_cols = [np.flatnonzero(hit)], [local_true[hit]]
                    if pairs is not None:
                        pair_rows, pair_ids = pairs
                        inside = (pair_ids >= offset + c0) & (pair_ids < offset + c1)
                        excluded_rows.append(pair_rows[inside])
                        excluded_cols.append(pair_ids[inside] - offset - c0)
                    count_block(scores, true_scores[rows], counts, rows,
                                (np.concatenate(excluded_rows), np.concatenate(excluded_cols)))
                    self._tick(len(rows) * (c1 - c0))
            offset += size

    def _rank_sampled(self, group: _Group, query: Tensor, rel: Tensor, true_ids: np.ndarray,
                      true_scores: Tensor, known: KnownLookup | None, counts: RankCounts) -> None:
        spec = group.target_type
        n = len(true_ids)
        batch = max(1, min(self.batch_size, n))
        # a batch's sample is gathered and scored in column blocks of at most SCORE_BLOCK scores, so that
        # 1M sampled candidates cost 64 MiB of scores, not batch x 1M (2 GiB) and a 1M-row gather
        block = max(1, SCORE_BLOCK // batch)
        for start in range(0, n, batch):
            rows = np.arange(start, min(n, start + batch))
            sample = unique_sorted(self.rng.integers(0, spec.count, self.negatives))
            true_rows, true_cols = np.nonzero(true_ids[rows, None] == sample[None, :])
            excluded_rows, excluded_cols = [true_rows], [true_cols]
            pairs = known(rows, 0, spec.count) if known is not None else None
            if pairs is not None:
                pair_rows, pair_ids = pairs
                position = np.searchsorted(sample, pair_ids)
                found = (position < len(sample)) & (sample[np.minimum(position, len(sample) - 1)] == pair_ids)
                excluded_rows.append(pair_rows[found])
                excluded_cols.append(position[found])
            all_rows, all_cols = np.concatenate(excluded_rows), np.concatenate(excluded_cols)
            for c0 in range(0, len(sample), block):
                c1 = min(len(sample), c0 + block)
                candidates = self._candidates(group, self.run.gather(spec.name, sample[c0:c1]), rel)
                scores = self.model.comparator.all_pairs(query[rows].unsqueeze(0), candidates.unsqueeze(0))[0]
                inside = (all_cols >= c0) & (all_cols < c1)
                count_block(scores, true_scores[rows], counts, rows, (all_rows[inside], all_cols[inside] - c0))
            self._tick(len(rows) * self.negatives)  # the sample's duplicates were dropped: count what was asked

    def evaluate(self, split: str, max_edges: int = 0) -> dict[str, Any]:
        started = time.perf_counter()
        edges = self.run.dataset.global_edges(split)
        if len(edges) == 0:
            raise ShardgraphError(f"The {split} split of {self.run.dataset.path} has no edges to evaluate.")
        if max_edges and len(edges) > max_edges:
            edges = edges[np.sort(self.rng.choice(len(edges), max_edges, replace=False))]
        total = sum(self.work(edges, predict) for predict in ("rhs", "lhs"))
        directions = {}
        with torch.no_grad(), tqdm(total=total, unit=" scores", unit_scale=True, desc=f"eval {split}",
                                   disable=None if self.progress else True, mininterval=1) as self._bar:
            for predict in ("rhs", "lhs"):
                self._bar.set_postfix_str(f"{predict} of {len(edges):,} edges", refresh=False)
                directions[predict] = self.rank(edges, predict)
        self._bar = None
        both = directions["rhs"].concat(directions["lhs"])
        result: dict[str, Any] = {"split": split, "filtered": self.filtered, "edges": len(edges),
                                  **metrics_from_counts(both)}
        result["negatives"] = self.negatives or self.candidates
        for predict, counts in directions.items():
            result[predict] = metrics_from_counts(counts)
        result["seconds"] = round(time.perf_counter() - started, 3)
        return result


def evaluate(run: str | Path | TrainedRun, *, split: str | None = None, filtered: bool | None = None,
             negatives: int | None = None, batch_size: int | None = None, max_edges: int | None = None,
             seed: int = 0, dataset: str | Path | None = None, progress: bool = False, save: bool = False,
             candidates: str | None = None) -> dict[str, Any]:
    """Link-prediction metrics (MRR, MR, Hits@1/3/10, AUC) of a run on a split of its dataset.

    Candidates are all entities of the true end's type; `negatives=N` samples N of them instead;
    `candidates="partition"` keeps only the true end's partition (PyTorch-BigGraph's all_negs
    protocol, for comparisons). Arguments left as None come from the run's [eval] config section.
    With `save`, the result is also written to
    RUN/eval.<split>.<filtered|raw>[.n<N>|.partition].json, where `shardgraph report` finds it.
    """
    trained = run if isinstance(run, TrainedRun) else TrainedRun(run, dataset=dataset)
    defaults = trained.config.eval
    split = defaults.split if split is None else split
    filtered = defaults.filtered if filtered is None else filtered
    negatives = defaults.negatives if negatives is None else negatives
    candidates = defaults.candidates if candidates is None else candidates
    batch_size = defaults.batch_size if batch_size is None else batch_size
    max_edges = defaults.max_edges if max_edges is None else max_edges
    if split not in ("train", "valid", "test"):
        raise ShardgraphError(f"--split must be train, valid or test. Got {split!r} instead.")
    if negatives < 0:
        raise ShardgraphError(f"negatives must be 0 (all) or a positive number. Got {negatives} instead.")
    evaluator = Evaluator(trained, filtered=filtered, negatives=negatives, batch_size=batch_size, seed=seed,
                          progress=progress, candidates=candidates)
    result = evaluator.evaluate(split, max_edges=max_edges)
    result["epoch"] = trained.epoch
    if save:
        scope = f".n{negatives}" if negatives else ".partition" if candidates == "partition" else ""
        name = f"eval.{split}.{'filtered' if filtered else 'raw'}{scope}.json"
        try:
            atomic_write_text(trained.path / name, json.dumps(result, indent=1))
        except OSError as exc:
            log.warning(f"could not save the result in {trained.path}: {exc}")
    return result
