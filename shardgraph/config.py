"""One typed, frozen config schema for every command.

A config is a TOML file. Every key has a default and a one-line help text, so an empty
file is a valid config; `shardgraph config defaults` prints them all, commented.
Overrides (`-p section.key=value`) apply on top of the file. A wrong key or value fails
before any work is done, naming the key path:

    training.lr must be > 0. Got -1 instead.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

from shardgraph.errors import ConfigError
from shardgraph.registry import did_you_mean

# Names of the model's extension points. The registries in shardgraph.model hold the
# implementations; tests check that both lists agree. Kept here so that validating a
# config (e.g. before an import) does not import torch.
OPERATOR_NAMES = ("none", "translation", "diagonal", "linear", "affine", "complex_diagonal", "rotate")
COMPARATOR_NAMES = ("dot", "cos", "l2", "squared_l2")
LOSS_NAMES = ("ranking", "logistic", "softmax")
BUCKET_ORDER_NAMES = ("random", "inside_out", "outside_in", "affinity", "sequential", "beta")
STORAGE_DTYPES = ("float32", "float16", "bfloat16")

Check = Callable[[Any], "str | None"]


# ----------------------------------------------------------------------------- checks
# A check returns None when the value is fine, else what was expected ("> 0").


def positive(value: Any) -> str | None:
    return None if value > 0 else "> 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else ">= 0"


def at_least(bound: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= bound else f">= {bound}"

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else "one of " + ", ".join(repr(c) for c in choices)

    return check


def non_empty(value: Any) -> str | None:
    return None if value else "a non-empty string"


def opt(default: Any, help: str, check: Check | None = None) -> Any:
    """A config key: its default, one line of help, and an optional check."""
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help, "check": check})
    return field(default=default, metadata={"help": help, "check": check})


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class EntityConfig:
    """An entity type (users, items, ...): how many partitions, and its embedding size."""

    partitions: int = opt(1, "number of partitions of this entity type (1 = unpartitioned)", positive)
    dimension: int = opt(0, "embedding dimension of this type; 0 = model.dimension", non_negative)


@dataclass(frozen=True)
class RelationConfig:
    """A relation type: the entity types at each end, its operator and the weight of its loss."""

    name: str = opt("", "relation name, as it appears in the edge files", non_empty)
    lhs: str = opt("entity", "entity type of the left-hand side (source)", non_empty)
    rhs: str = opt("entity", "entity type of the right-hand side (destination)", non_empty)
    operator: str = opt("none", "relation operator: " + ", ".join(OPERATOR_NAMES), one_of(*OPERATOR_NAMES))
    weight: float = opt(1.0, "weight of this relation's edges in the loss", non_negative)


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how edge files are read by `shardgraph import`."""

    dataset: str = opt("", "dataset directory written by `shardgraph import` (used by train/eval)")
    format: str = opt("auto", "edge file format: auto (Parquet by suffix or for a directory; Matrix Market by its "
                      "banner; otherwise delimited text), text, tsv, csv, parquet",
                      one_of("auto", "text", "tsv", "csv", "parquet"))
    columns: str = opt("auto", "roles of the file's columns, e.g. lhs,rel,rhs or lhs,rhs,weight ('-' skips a "
                       "column), or by header name: src=lhs,dst=rhs,type=rel; auto = from the header's names, "
                       "else lhs,rel,rhs for 3 columns and lhs,rhs for 2")
    header: str = opt("auto", "whether the first line of each text file is a header: auto (detected), true, false",
                      one_of("auto", "true", "false"))
    delimiter: str = opt("auto", "field delimiter of text files: auto (detected), tab, comma, semicolon, pipe, "
                         "space, whitespace (runs of spaces/tabs) or one character")
    comment: str = opt("#%", "lines of text files starting with any of these characters are comments; '' = none")
    unseen: str = opt("keep", "entities seen only in valid/test: keep them, or drop them with their edges",
                      one_of("keep", "drop"))
    block_mb: int = opt(2, "size of the read buffer in MiB (memory is bounded by it and the dictionaries)",
                        positive)
    shuffle: bool = opt(True, "shuffle the training edges of each bucket once at import (seeded, bounded memory), "
                        "so that a sorted input file trains as well as a shuffled one")


@dataclass(frozen=True)
class ModelConfig:
    """The score function: score(s, r, d) = comparator(θ_s, operator_r(θ_d)), and the loss."""

    kind: str = opt("embedding", "what `shardgraph train` trains: embedding (the multi-relation embeddings these "
                    "keys describe) or sage (GraphSAGE node classification, the [sage] section; the same as "
                    "`shardgraph train-sage`)", one_of("embedding", "sage"))
    dimension: int = opt(100, "embedding dimension (per type override: entities.<type>.dimension)", positive)
    operator: str = opt("none", "relation operator when relations are not listed in [[relations]]: "
                        + ", ".join(OPERATOR_NAMES), one_of(*OPERATOR_NAMES))
    comparator: str = opt("dot", "comparator: " + ", ".join(COMPARATOR_NAMES), one_of(*COMPARATOR_NAMES))
    loss: str = opt("softmax", "loss: " + ", ".join(LOSS_NAMES), one_of(*LOSS_NAMES))
    margin: float = opt(0.1, "margin of the ranking loss", non_negative)
    dynamic_relations: str = opt(
        "auto",
        "one parameter set per relation id with separate lhs/rhs operators (true), per-relation operators "
        "as listed (false), or auto: true when [[relations]] is empty",
        one_of("auto", "true", "false"),
    )
    init_scale: float = opt(1e-3, "embeddings start as normal(0, init_scale)", positive)
    max_norm: float = opt(0.0, "rows longer than this are scaled down to it when used; 0 = no limit",
                          non_negative)
    regularizer: str = opt("none", "regularizer on the embeddings and relation parameters of each batch: "
                           "none, n3, l2", one_of("none", "n3", "l2"))
    regularization_weight: float = opt(0.0, "weight of the regularizer", non_negative)
    global_bias: bool = opt(False, "learn one global vector per entity type, added to all its embeddings")


@dataclass(frozen=True)
class TrainingConfig:
    """How to train: epochs, batches and negatives, learning rates, workers, bucket order."""

    epochs: int = opt(10, "number of passes over the training edges", positive)
    batch_size: int = opt(1000, "edges per batch", positive)
    num_batch_negs: int = opt(50, "negatives taken from the other edges of the same chunk; also the chunk "
                              "size", non_negative)
    num_uniform_negs: int = opt(50, "negatives drawn uniformly from the current partition, shared by a chunk",
                                non_negative)
    all_negs: bool = opt(False, "score every edge against all entities of the partition (small graphs)")
    sampling_correction: bool = opt(False, "softmax loss: subtract from every candidate's score the log of its "
                                    "expected count among the sampled negatives, so that batch negatives "
                                    "(drawn by degree) do not push popular entities down the full ranking")
    self_negatives: bool = opt(False, "also score each edge's query entity as a negative of its own query (lhs "
                               "among the rhs candidates and vice versa), unless the edge itself, or a training "
                               "edge (h, r, h), is a self-loop: sampled negatives almost never hold it, so "
                               "nothing else teaches a model that an entity is not related to itself")
    fused_step: bool = opt(True, "dot-product models with no operator (float32, CPU) train with the fused compiled "
                           "step, in worker threads; false = the general torch step, in worker processes")
    lr: float = opt(0.1, "learning rate of the embeddings (row-wise Adagrad)", positive)
    relation_lr: float = opt(0.0, "learning rate of the relation parameters (Adagrad); 0 = lr", non_negative)
    workers: int = opt(0, "HOGWILD worker processes per bucket; 0 = one per core", non_negative)
    threads: int = opt(0, "torch threads per worker; 0 = cores / workers", non_negative)
    bucket_order: str = opt("inside_out", "order of the P×P buckets: " + ", ".join(BUCKET_ORDER_NAMES),
                            one_of(*BUCKET_ORDER_NAMES))
    seed: int = opt(0, "random seed: the same seed gives the same result on the same machine (workers=1)",
                    non_negative)
    edge_chunk_size: int = opt(4_000_000, "edges read from a bucket at a time (bounds memory)", positive)
    checkpoint_every_buckets: int = opt(0, "also checkpoint after every N buckets; 0 = after each epoch only",
                                        non_negative)
    keep_checkpoints: int = opt(2, "complete checkpoints to keep; --resume falls back to an older one when the "
                                "newest is damaged", positive)
    eval_every: int = opt(0, "evaluate on the valid split every K epochs; 0 = never", non_negative)
    eval_negatives: int = opt(0, "candidates for that evaluation: 0 = all entities, else N sampled",
                              non_negative)
    early_stopping_patience: int = opt(0, "with eval_every: stop when the validation MRR has not improved for this "
                                       "many evaluations in a row; 0 = train every epoch. Either way the "
                                       "checkpoint of the best validation MRR is kept, and eval and export use it",
                                       non_negative)
    device: str = opt("cpu", "cpu, or cuda to train each bucket on a GPU", one_of("cpu", "cuda"))


@dataclass(frozen=True)
class StorageConfig:
    """Where partitions live while training: the buffer, the storage dtype, the memory bound."""

    buffer_partitions: int = opt(0, "partitions held in memory at once (>= 2); 0 = all of them",
                                 non_negative)
    storage_dtype: str = opt("float32", "dtype embeddings are stored in (math is float32): "
                             + ", ".join(STORAGE_DTYPES), one_of(*STORAGE_DTYPES))
    memory_limit_mb: int = opt(0, "refuse to train when the planned memory exceeds this; 0 = no limit",
                               non_negative)
    prefetch: bool = opt(True, "load the next bucket's partitions on a background thread")


@dataclass(frozen=True)
class EvalConfig:
    """How `shardgraph eval` ranks: candidates, filtering, batch size."""

    split: str = opt("test", "split to evaluate: valid, test or train", one_of("valid", "test", "train"))
    filtered: bool = opt(True, "filtered ranking: other true edges of train+valid+test are not counted")
    negatives: int = opt(0, "candidates per edge: 0 = all entities of the type, N = N sampled", non_negative)
    candidates: str = opt("all", "with negatives = 0: all entities of the type, or only the true end's "
                          "partition (PyTorch-BigGraph's all_negs protocol)", one_of("all", "partition"))
    batch_size: int = opt(512, "evaluation edges scored per matrix product", positive)
    max_edges: int = opt(0, "evaluate at most this many edges (a seeded sample); 0 = all", non_negative)


WALK_METHODS = ("none", "deepwalk", "node2vec", "metapath2vec")


@dataclass(frozen=True)
class WalksConfig:
    """Random-walk embeddings: walks over the graph become skip-gram (node, context) edges, trained as usual."""

    method: str = opt("none", "none (train on the edges), or train on walks: " + ", ".join(WALK_METHODS[1:]),
                      one_of(*WALK_METHODS))
    walks_per_node: int = opt(10, "walks started from every node that has a neighbour", positive)
    walk_length: int = opt(80, "nodes per walk", at_least(2))
    window: int = opt(10, "context window: nodes up to this far apart in a walk form a pair", at_least(1))
    shrink_window: bool = opt(True, "word2vec's shrunk window: each centre draws its window in 1..window")
    sample: float = opt(1e-3, "word2vec's subsampling of frequent nodes (threshold, as gensim's sample); 0 = off",
                        non_negative)
    p: float = opt(1.0, "node2vec return parameter (1/p = weight of going back)", positive)
    q: float = opt(1.0, "node2vec in-out parameter (1/q = weight of moving away)", positive)
    metapaths: tuple[str, ...] = opt(
        (), "metapath2vec: metapaths over entity types and relations, e.g. 'user-clicks-article-clicks_rev-user' "
        "('<rel>_rev' walks a relation backwards; 'user-article-user' names types only)")
    directed: bool = opt(False, "walk edges only from lhs to rhs (default: both ways)")
    weighted: bool = opt(True, "walk by the 'weight' edge attribute where the dataset has one")
    block_walks: int = opt(4096, "walks generated at a time (bounds memory: about 200 bytes per node of a walk)",
                           positive)
    threads: int = opt(0, "walker threads; 0 = one per core", non_negative)
    seed: int = opt(0, "seed of the walks and windows: the same seed gives the same walks on any thread count",
                    non_negative)


ENCODER_NAMES = ("hash", "numeric", "multi_hot", "dense", "embedding")
TOKENIZER_NAMES = ("none", "whitespace", "words", "char_ngrams")
AGGREGATOR_NAMES = ("mean", "gcn", "max")


@dataclass(frozen=True)
class FeatureConfig:
    """One feature column of a node table and how it is encoded (`[nodes.features.<column>]`)."""

    encoder: str = opt("hash", "encoder: hash (categorical or text, signed hashing trick), numeric (standardised "
                       "with the training nodes' statistics, missing flagged), multi_hot (ids like '12 87 911'), "
                       "dense (a vector like '0.1 0.5'), embedding (the node's vector in another run)",
                       one_of(*ENCODER_NAMES))
    n_features: int = opt(1024, "hash: buckets; multi_hot: number of ids (ids must be below it)", positive)
    tokenizer: str = opt("none", "hash: none (the whole value is one token), whitespace, words (lower-cased "
                         "alphanumeric runs: 'customer_id' -> customer, id), char_ngrams",
                         one_of(*TOKENIZER_NAMES))
    ngram: int = opt(3, "hash with char_ngrams: length of the character n-grams", positive)
    prefix: bool = opt(True, "hash: tokens are hashed as '<column>=<token>' so columns do not share tokens")
    alternate_sign: bool = opt(True, "hash: signed hashing (sign from the hash), as scikit-learn's FeatureHasher")
    separator: str = opt(" ", "multi_hot / dense: separator of the values inside the field")
    dimension: int = opt(0, "dense: length of the vector (0 = from the first row)", non_negative)
    run: str = opt("", "embedding: run directory of the shardgraph run whose vectors are used")


@dataclass(frozen=True)
class NodesConfig:
    """Node tables read by `shardgraph import --nodes`: ids, feature columns with their encoders, labels."""

    files: tuple[str, ...] = opt((), "node table files (CSV/TSV, plain or .gz, or Parquet) with a header")
    entity_type: str = opt("entity", "entity type of the nodes in the tables")
    id_column: str = opt("id", "column holding the node id (as in the edge files)", non_empty)
    label_column: str = opt("", "column holding the label(s); empty = none (or a separate labels file)")
    labels: str = opt("", "separate label file: id, label per line (several lines per id = multi-label)")
    label_separator: str = opt("|", "separator of several labels inside one label field")
    features: dict[str, FeatureConfig] = opt({}, "feature columns by name, each with its encoder")
    block_mb: int = opt(4, "read block in MiB (memory is bounded by it and the dictionaries)", positive)


@dataclass(frozen=True)
class SageConfig:
    """GraphSAGE node classification (`shardgraph train-sage`): model, optimiser, sampling, split."""

    hidden: int = opt(64, "width of the hidden layer(s)", positive)
    layers: int = opt(2, "number of SAGE layers", positive)
    aggregator: str = opt("mean", "neighbour aggregator: " + ", ".join(AGGREGATOR_NAMES),
                          one_of(*AGGREGATOR_NAMES))
    dropout: float = opt(0.5, "dropout before each layer", non_negative)
    lr: float = opt(0.01, "Adam learning rate", positive)
    weight_decay: float = opt(5e-4, "Adam weight decay (L2)", non_negative)
    epochs: int = opt(1000, "most epochs", positive)
    patience: int = opt(100, "stop after this many epochs without a better validation accuracy", positive)
    class_weights: bool = opt(False, "weight the loss by inverse class frequency (skewed labels); multi-label: "
                                     "each label's positives by its negatives/positives ratio")
    multi_label: bool = opt(False, "nodes carry several labels (several label lines per id): one sigmoid per label "
                                   "and binary cross-entropy, top-k predictions with independent probabilities "
                                   "(false: one softmax over the labels; a node's first label is its class)")
    normalize: str = opt("l1", "row normalisation of the sparse features: l1 or none", one_of("l1", "none"))
    mode: str = opt("auto", "full (whole graph each step), minibatch (sampled neighbourhoods), or auto: full "
                    "when the graph has at most full_batch_nodes nodes", one_of("auto", "full", "minibatch"))
    full_batch_nodes: int = opt(200_000, "auto mode: largest graph trained full-batch", positive)
    fanouts: tuple[int, ...] = opt((25, 10), "neighbours sampled per node at each layer (first = nearest)")
    batch_size: int = opt(512, "target nodes per mini-batch", positive)
    eval_every: int = opt(1, "validate every K epochs (mini-batch mode)", positive)
    directed: bool = opt(False, "aggregate over in-neighbours only (false: both directions)")
    self_loops: bool = opt(False, "keep self-loops of the edge files as neighbours")
    split_train: str = opt("", "file of training node ids, one per line (empty: stratified split)")
    split_valid: str = opt("", "file of validation node ids")
    split_test: str = opt("", "file of test node ids")
    split_fractions: tuple[float, ...] = opt((0.6, 0.2, 0.2), "stratified split of the labelled nodes")
    seed: int = opt(0, "seed of the split, the initialisation, dropout and sampling", non_negative)
    threads: int = opt(0, "torch and sampler threads; 0 = all cores", non_negative)
    checkpoint_seconds: float = opt(60.0, "write the resumable checkpoint at most this often (and at the end)",
                                    non_negative)


@dataclass(frozen=True)
class Config:
    """The whole config. Sections: data, entities, relations, model, training, storage, eval, walks."""

    data: DataConfig = opt(DataConfig(), "data")
    entities: dict[str, EntityConfig] = opt(
        {"entity": EntityConfig()}, "entity types by name; relations refer to them"
    )
    relations: tuple[RelationConfig, ...] = opt(
        (), "relation types; empty = every relation found in the edge files, all of model.operator"
    )
    model: ModelConfig = opt(ModelConfig(), "model")
    training: TrainingConfig = opt(TrainingConfig(), "training")
    storage: StorageConfig = opt(StorageConfig(), "storage")
    eval: EvalConfig = opt(EvalConfig(), "eval")
    walks: WalksConfig = opt(WalksConfig(), "walks")
    nodes: NodesConfig = opt(NodesConfig(), "nodes")
    sage: SageConfig = opt(SageConfig(), "sage")

    # --------------------------------------------------------------- derived views
    def entity_dimension(self, entity_type: str) -> int:
        dim = self.entities[entity_type].dimension
        return dim if dim > 0 else self.model.dimension

    def is_dynamic(self) -> bool:
        """Whether relations are dynamic (one parameter row per relation id, lhs and rhs operators)."""
        if self.model.dynamic_relations == "auto":
            return not self.relations
        return self.model.dynamic_relations == "true"

    def replace(self, **sections: Any) -> Config:
        return dataclasses.replace(self, **sections)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


# ----------------------------------------------------------------------------- loading

C = TypeVar("C")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _convert_scalar(tp: Any, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{path} must be a finite number. Got {value!r} instead.")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # dynamic_relations = true in TOML
            return "true" if value else "false"
    raise ConfigError(f"{path} must be {_type_name(tp)}. Got {value!r} instead.")


def _build(cls: type[C], raw: Any, path: str) -> C:
    """Build dataclass `cls` from a TOML table, checking every key and value."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path or 'the config'} must be a table of keys. Got {raw!r} instead.")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            prefix = f"{path}." if path else ""
            hint = did_you_mean(key, list(fields)).replace(" '", " '" + prefix)
            raise ConfigError(f"Unknown config key {prefix + key!r}.{hint} "
                              f"Valid keys{' of ' + path if path else ''}: {', '.join(fields)}.")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key_path = f"{path}.{name}" if path else name
        kwargs[name] = _convert(hints[name], raw[name], key_path)
        check = f.metadata.get("check")
        if check is not None:
            expected = check(kwargs[name])
            if expected is not None:
                raise ConfigError(f"{key_path} must be {expected}. Got {raw[name]!r} instead.")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)  # type: ignore[arg-type]
    if origin is dict:
        _, value_type = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a table. Got {value!r} instead.")
        return {str(k): _convert(value_type, v, f"{path}.{k}") for k, v in value.items()}
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{path} must be a list. Got {value!r} instead.")
        return tuple(_convert(item_type, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (Union, types.UnionType):
        raise TypeError(f"unsupported config type {tp}")
    return _convert_scalar(tp, value, path)


def _check_consistency(config: Config) -> None:
    """Checks that span several keys (a relation naming an undeclared entity type, ...)."""
    types_ = config.entities
    if not types_:
        raise ConfigError("entities must name at least one entity type.")
    for name in types_:
        if not name or any(c in name for c in "/\\\n\t ") or name.startswith("."):
            raise ConfigError(f"entities.{name!r}: an entity type name must be non-empty, without '/', "
                              "spaces or a leading '.'.")
    partitioned = {t.partitions for t in types_.values() if t.partitions > 1}
    if len(partitioned) > 1:
        raise ConfigError("entities: every partitioned entity type must have the same number of partitions "
                          f"(or 1). Got {sorted(partitioned)} instead.")
    seen: set[str] = set()
    for i, rel in enumerate(config.relations):
        where = f"relations[{i}] ({rel.name!r})"
        if rel.name in seen:
            raise ConfigError(f"{where}: relation names must be unique; {rel.name!r} appears twice.")
        seen.add(rel.name)
        for side in ("lhs", "rhs"):
            entity_type = getattr(rel, side)
            if entity_type not in types_:
                raise ConfigError(
                    f"{where}.{side} names entity type {entity_type!r}, which is not declared. "
                    f"Declared: {', '.join(types_)}.{did_you_mean(entity_type, list(types_))}"
                )
        if config.entity_dimension(rel.lhs) != config.entity_dimension(rel.rhs):
            raise ConfigError(f"{where}: lhs type {rel.lhs!r} and rhs type {rel.rhs!r} must have the same "
                              "dimension to be compared.")
    operators = {r.operator for r in config.relations} if config.relations else {config.model.operator}
    if operators & {"complex_diagonal", "rotate"}:
        for entity_type in types_:
            if config.entity_dimension(entity_type) % 2:
                raise ConfigError(f"model.dimension must be even for complex_diagonal/rotate operators "
                                  f"(entity type {entity_type!r} has {config.entity_dimension(entity_type)}).")
    if config.is_dynamic() and config.relations and len(operators) > 1:
        raise ConfigError("dynamic relations share one operator: every [[relations]] entry must have the "
                          f"same operator. Got {sorted(operators)} instead.")
    t = config.training
    if not t.all_negs and t.num_batch_negs == 0 and t.num_uniform_negs == 0:
        raise ConfigError("training needs negatives: set training.num_batch_negs or "
                          "training.num_uniform_negs > 0, or training.all_negs = true.")
    if t.early_stopping_patience and not t.eval_every:
        raise ConfigError("training.early_stopping_patience watches the validation MRR of training.eval_every: "
                          "set training.eval_every > 0 too.")
    if t.sampling_correction and config.model.loss != "softmax":
        raise ConfigError(f"training.sampling_correction needs model.loss = \"softmax\". Got "
                          f"{config.model.loss!r} instead.")
    if t.sampling_correction and t.all_negs:
        raise ConfigError("training.sampling_correction corrects for sampled negatives; with training.all_negs = "
                          "true every entity is a candidate and there is nothing to correct. Turn one of them off.")
    if config.storage.buffer_partitions == 1:
        raise ConfigError("storage.buffer_partitions must be 0 (all) or >= 2. Got 1 instead.")
    _check_walks(config.walks)


def _check_walks(walks: WalksConfig) -> None:
    """Walk keys that depend on each other (the metapaths are checked against the dataset later)."""
    if walks.method == "metapath2vec" and not walks.metapaths:
        raise ConfigError("walks.metapaths must list at least one metapath when walks.method = \"metapath2vec\", "
                          "e.g. [\"user-clicks-article-clicks_rev-user\"].")
    if walks.method != "metapath2vec" and walks.metapaths:
        raise ConfigError(f"walks.metapaths is only read by walks.method = \"metapath2vec\". Got method "
                          f"{walks.method!r} instead.")
    if walks.method == "deepwalk" and (walks.p != 1.0 or walks.q != 1.0):
        raise ConfigError("walks.p and walks.q are node2vec's; set walks.method = \"node2vec\" to use them.")


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Build and validate a Config from a plain mapping (as parsed from TOML)."""
    config = _build(Config, raw, "")
    _check_consistency(config)
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse 'section.key=value' into (path, value). The value is TOML, or a bare string."""
    if "=" not in text:
        raise ConfigError(f"An override must look like section.key=value. Got {text!r} instead.")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"An override must look like section.key=value. Got {text!r} instead.")
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return key.split("."), value


def _apply_override(raw: dict[str, Any], path: list[str], value: Any) -> None:
    node: Any = raw
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{'.'.join(path[:i])} has {len(node)} entries; "
                                  f"{'.'.join(path[: i + 1])} does not exist.")
            node = node[int(part)]
        else:
            if part == "relations" and part not in node:
                node[part] = []
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"{'.'.join(path[: i + 1])} is a value, not a section.")
    last = path[-1]
    if isinstance(node, list):
        raise ConfigError(f"Override {'.'.join(path)!r} must name a key inside a list entry.")
    node[last] = value


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
) -> Config:
    """Load a TOML config file (or none: all defaults), apply `-p` overrides and validate.

    Raises ConfigError naming the bad key; nothing has been done when it is raised.
    """
    raw: dict[str, Any] = _deep_copy(base) if base is not None else {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {str(path)!r} does not exist.")
        try:
            with open(path, "rb") as f:
                raw = _merge(raw, tomllib.load(f))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    for text in overrides:
        key_path, value = parse_override(text)
        _apply_override(raw, key_path, value)
    try:
        return config_from_dict(raw)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _deep_copy(raw: Mapping[str, Any]) -> dict[str, Any]:
    def copy(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: copy(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [copy(v) for v in value]
        return value

    result: dict[str, Any] = copy(raw)
    return result


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- writing


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        text = repr(value)
        return text if ("." in text or "e" in text or "inf" in text or "nan" in text) else text + ".0"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 100_000 else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _section_lines(obj: Any, commented: bool) -> list[str]:
    lines = []
    for f in dataclasses.fields(obj):
        if commented:
            lines.append(f"# {f.metadata['help']}")
        lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
    return lines


def dump_config(config: Config, commented: bool = True) -> str:
    """The config as TOML text; with `commented`, every key is preceded by its help line."""
    out: list[str] = []
    if commented:
        out += ["# shardgraph config. Every key has a default; delete what you do not change.",
                "# Override any key on the command line: -p section.key=value", ""]
    for section in ("data", "model", "training", "storage", "eval", "walks", "sage"):
        obj = getattr(config, section)
        out.append(f"[{section}]")
        if commented:
            out.insert(len(out) - 1, f"# {type(obj).__doc__}")
        out += [*_section_lines(obj, commented), ""]
    for name, entity in config.entities.items():
        if commented:
            out.append(f"# {EntityConfig.__doc__}")
        out.append(f"[entities.{name}]")
        out += [*_section_lines(entity, commented), ""]
    nodes = config.nodes
    if commented:
        out.append(f"# {NodesConfig.__doc__}")
    out.append("[nodes]")
    for f in dataclasses.fields(nodes):
        if f.name == "features":
            continue
        if commented:
            out.append(f"# {f.metadata['help']}")
        out.append(f"{f.name} = {_toml_value(getattr(nodes, f.name))}")
    out.append("")
    for name, feature in nodes.features.items():
        out.append(f"[nodes.features.{name}]")
        out += [*_section_lines(feature, commented and name == next(iter(nodes.features))), ""]
    if config.relations:
        for rel in config.relations:
            out.append("[[relations]]")
            out += [*_section_lines(rel, commented and rel is config.relations[0]), ""]
    elif commented:
        out.append(f"# {RelationConfig.__doc__} None listed: every relation in the edge")
        out.append("# files is used, all with model.operator (dynamic relations). To list them:")
        out += ["# " + line for line in ["[[relations]]", *_section_lines(RelationConfig(name="follows"), True)]]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def default_config() -> Config:
    return Config()
