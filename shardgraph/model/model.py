"""The model: entity types, relations, their operators, the comparator and the loss.

Scores follow PyTorch-BigGraph so its users can move over:

* per-relation operators (`dynamic_relations = false`): score(s, r, d) = cmp(θ_s, op_r(θ_d)),
  one score for both directions; batches hold one relation each.
* dynamic relations: one parameter row per relation id and two operators per relation.
  Predicting the rhs scores cmp(lhs_op_r(θ_s), θ_d), predicting the lhs scores
  cmp(θ_s, rhs_op_r(θ_d)). The operator sits on the side that is not corrupted, so a
  chunk's negatives are raw embeddings shared by edges of any relation, and both
  directions are trained (reciprocal relations).

For ranking, each direction is a `query` (the known end, transformed) against
`candidates` (entities of the other end's type, transformed where the mode says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from shardgraph.config import Config
from shardgraph.data.dataset import Dataset
from shardgraph.errors import ConfigError
from shardgraph.model.comparators import Comparator, make_comparator
from shardgraph.model.losses import Loss, make_loss
from shardgraph.model.operators import Operator, Params, make_operator
from shardgraph.registry import did_you_mean

LHS_SIDE, RHS_SIDE = "lhs", "rhs"


@dataclass(frozen=True)
class EntityTypeSpec:
    name: str
    index: int
    dim: int
    partitions: int
    partition_counts: tuple[int, ...]

    @property
    def count(self) -> int:
        return sum(self.partition_counts)

    def partition_of_bucket(self, bucket_index: int) -> int:
        return bucket_index if self.partitions > 1 else 0


@dataclass(frozen=True)
class RelationSpec:
    id: int
    name: str
    lhs: str
    rhs: str
    operator: str
    weight: float


@dataclass(frozen=True)
class Direction:
    """How one prediction direction scores: query side, operator on the query / on the candidates."""

    predict: str  # "rhs" or "lhs": the end whose candidates are ranked
    query_op: str | None  # parameter-table prefix of the operator applied to the query, or None
    candidate_op: str | None  # ... applied to the candidates, or None


class Model:
    """Resolved structure of a model: what the config asks for, checked against the dataset."""

    def __init__(self, config: Config, dataset: Dataset) -> None:
        self.config = config
        self.dynamic = config.is_dynamic()
        self.comparator: Comparator = make_comparator(config.model.comparator)
        self.loss: Loss = make_loss(config.model.loss, config.model.margin)
        self.entity_types: dict[str, EntityTypeSpec] = {}
        for index, (name, info) in enumerate(dataset.entity_types.items()):
            if name not in config.entities and not (len(config.entities) == 1 and len(dataset.entity_types) == 1):
                raise ConfigError(f"The dataset has entity type {name!r}, which the config does not declare "
                                  f"(declared: {', '.join(config.entities)}).")
            entity_config = config.entities.get(name) or next(iter(config.entities.values()))
            dim = entity_config.dimension or config.model.dimension
            self.entity_types[name] = EntityTypeSpec(name, index, dim, info.partitions, info.partition_counts)
        self.relations = self._resolve_relations(config, dataset)
        self.operators: dict[str, Operator] = {}
        self.num_partitions = dataset.num_partitions
        for rel in self.relations:
            dim = self.entity_types[rel.rhs].dim
            if self.entity_types[rel.lhs].dim != dim:
                raise ConfigError(f"Relation {rel.name!r} joins types of dimension {self.entity_types[rel.lhs].dim} "
                                  f"and {dim}; they must be equal.")
            for prefix in self.operator_prefixes(rel):
                if prefix not in self.operators:
                    self.operators[prefix] = make_operator(rel.operator, dim)
        self.weights = torch.tensor([r.weight for r in self.relations], dtype=torch.float32)
        self.group_of_relation = self._groups()

    # ------------------------------------------------------------------ structure
    def _resolve_relations(self, config: Config, dataset: Dataset) -> list[RelationSpec]:
        if not config.relations:
            return [RelationSpec(i, r.name, r.lhs, r.rhs, config.model.operator, 1.0)
                    for i, r in enumerate(dataset.relations)]
        declared = {r.name: r for r in config.relations}
        out = []
        for i, r in enumerate(dataset.relations):
            rc = declared.get(r.name)
            if rc is None:
                raise ConfigError(f"The dataset has relation {r.name!r}, which the config does not declare."
                                  f"{did_you_mean(r.name, list(declared))}")
            if (rc.lhs, rc.rhs) != (r.lhs, r.rhs):
                raise ConfigError(f"Relation {r.name!r} joins {rc.lhs} -> {rc.rhs} in the config but "
                                  f"{r.lhs} -> {r.rhs} in the dataset; the entity types disagree.")
            out.append(RelationSpec(i, r.name, r.lhs, r.rhs, rc.operator, rc.weight))
        return out

    def operator_prefixes(self, rel: RelationSpec) -> list[str]:
        """Names of the parameter tables this relation uses: "<side>/<operator>"."""
        if self.dynamic:
            return [f"{LHS_SIDE}/{rel.operator}", f"{RHS_SIDE}/{rel.operator}"]
        return [f"{RHS_SIDE}/{rel.operator}"]

    def _groups(self) -> Tensor:
        """Relations that can share a batch: same entity types (and, per-relation mode, the relation itself)."""
        keys: dict[tuple[str, ...], int] = {}
        groups = []
        for rel in self.relations:
            key = (rel.lhs, rel.rhs) if self.dynamic else (rel.lhs, rel.rhs, str(rel.id))
            groups.append(keys.setdefault(key, len(keys)))
        return torch.tensor(groups, dtype=torch.long)

    def directions(self, rel: RelationSpec) -> tuple[Direction, Direction]:
        """(predict rhs, predict lhs) for a relation."""
        if rel.operator == "none":
            return Direction("rhs", None, None), Direction("lhs", None, None)
        if self.dynamic:
            return (Direction("rhs", f"{LHS_SIDE}/{rel.operator}", None),
                    Direction("lhs", f"{RHS_SIDE}/{rel.operator}", None))
        prefix = f"{RHS_SIDE}/{rel.operator}"
        return Direction("rhs", None, prefix), Direction("lhs", prefix, None)

    # ------------------------------------------------------------------ parameters
    def init_relation_params(self) -> dict[str, Tensor]:
        """Fresh relation parameter tables, keyed "<side>/<operator>/<param>", each (R, ...)."""
        out = {}
        for prefix, op in self.operators.items():
            for name, table in op.init_params(len(self.relations)).items():
                out[f"{prefix}/{name}"] = table
        return out

    def params_of(self, tables: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
        """The tables of one operator, keyed by parameter name."""
        start = prefix + "/"
        return {key[len(start):]: t for key, t in tables.items() if key.startswith(start)}

    def apply(self, prefix: str | None, x: Tensor, params: Params, rel: Tensor | None) -> Tensor:
        """op(x) with gathered params (see Operator.apply); identity for prefix None."""
        if prefix is None:
            return x
        return self.operators[prefix].apply(x, params, rel)

    # ------------------------------------------------------------------ scoring
    def query(self, direction: Direction, known: Tensor, tables: dict[str, Tensor], rel: Tensor) -> Tensor:
        """Transformed and prepared query vectors (B, D) for edges of relations `rel` (B,)."""
        if direction.query_op is None:
            return self.comparator.prepare(known)
        params = {k: v[rel] for k, v in self.params_of(tables, direction.query_op).items()}
        index = torch.arange(rel.shape[0], device=rel.device)
        return self.comparator.prepare(self.operators[direction.query_op].apply(known, params, index))

    def candidates(self, direction: Direction, entities: Tensor, tables: dict[str, Tensor], rel: int) -> Tensor:
        """Transformed and prepared candidate vectors (N, D) for one relation id."""
        if direction.candidate_op is None:
            return self.comparator.prepare(entities)
        params = {k: v[rel : rel + 1] for k, v in self.params_of(tables, direction.candidate_op).items()}
        return self.comparator.prepare(self.operators[direction.candidate_op].apply(entities, params, None))

    def score(self, lhs: Tensor, rel: Tensor, rhs: Tensor, tables: dict[str, Tensor]) -> Tensor:
        """Score of edges (lhs (B, D), rel (B,), rhs (B, D)) as the rhs-prediction direction scores them."""
        out = torch.empty(lhs.shape[0], dtype=lhs.dtype, device=lhs.device)
        for r in torch.unique(rel).tolist():
            rows = torch.nonzero(rel == r).squeeze(1)
            direction = self.directions(self.relations[r])[0]
            q = self.query(direction, lhs[rows], tables, rel[rows])
            c = self.candidates(direction, rhs[rows], tables, r)
            out[rows] = self.comparator.pairs(q, c)
        return out

    def __repr__(self) -> str:
        kind = "dynamic" if self.dynamic else "per-relation"
        return (f"Model({len(self.entity_types)} entity types, {len(self.relations)} relations ({kind}), "
                f"operators={sorted(set(o.name for o in self.operators.values()))}, comparator={self.comparator.name}, "
                f"loss={self.loss.name})")
