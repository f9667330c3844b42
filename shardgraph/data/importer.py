"""Streaming import: edge files -> a dataset directory of P×P edge buckets.

One pass over the files, block by block. Each new string id gets the next dense id of
its entity type; entity g of a type with P partitions lives in partition g % P at local
id g // P (round robin: partitions are balanced to within one entity, and both are known
the moment an id is first seen, so no second pass is needed). New ids are appended to
the dictionary file of their partition as they appear; edges wait in a buffer of
BUCKET_BUFFER_BYTES and are then appended to the .npy file of their bucket. A thread reads the
next blocks while one is mapped (the decoding runs outside the interpreter lock). Memory is
bounded by the dictionaries (~40 bytes per entity), the buffer and three read blocks, never by
the number of edges. At the end each training bucket is shuffled (shardgraph.data.shuffle: on
disk in bounded memory; in memory, by the same permutation, for a bucket still wholly in the
buffer), so the order of the input file never reaches the optimiser.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from tqdm.auto import tqdm

from shardgraph import __version__
from shardgraph.config import Config, EntityConfig, RelationConfig, load_config
from shardgraph.data.dataset import (
    EDGE_DTYPE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    attribute_file,
    bucket_file,
    dictionary_file,
)
from shardgraph.data.dictionary import StringIdTable
from shardgraph.data.reader import EdgeBlock, EdgeFileReader
from shardgraph.data.shuffle import DEFAULT_MEMORY_ROWS as SHUFFLE_MEMORY_ROWS
from shardgraph.data.shuffle import in_memory_order, shuffle_rows
from shardgraph.data.sources import ObjectReader, config_for, is_edge_file
from shardgraph.errors import ConfigError, InputError
from shardgraph.utils.atomic import atomic_directory
from shardgraph.utils.lock import exclusive
from shardgraph.utils.memory import peak_rss_mb
from shardgraph.utils.npy import NpyAppender
from shardgraph.utils.prefetch import read_ahead

log = logging.getLogger(__name__)

Source = str | Path | object  # an edge file (path or URI), or a Python object (see shardgraph.data.sources)
Reader = EdgeFileReader | ObjectReader
DEFAULT_RELATION = "edge"  # name of the single relation of two-column files
MAX_LOCAL_ID = np.iinfo(EDGE_DTYPE).max
SHUFFLE_SEED = 0x5EED  # with the bucket's (i, j): the same input always gives the same dataset
BUCKET_BUFFER_BYTES = 64 << 20  # edge rows held before they are written to their buckets


@dataclass
class ImportSummary:
    """What an import produced; `to_dict()` is the `--json` line."""

    path: str
    entities: int
    relations: int
    edges: dict[str, int]
    partitions: int
    seconds: float
    peak_rss_mb: float
    unseen_entities: dict[str, int] = field(default_factory=dict)
    dropped_edges: dict[str, int] = field(default_factory=dict)
    edge_attributes: list[str] = field(default_factory=list)
    comment_lines: int = 0
    blank_lines: int = 0
    detected: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> what was detected

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        edges = " / ".join(f"{self.edges.get(s, 0):,}" for s in ("train", "valid", "test"))
        text = (f"imported {self.entities:,} entities, {self.relations:,} relations, {edges} train/valid/test "
                f"edges into {self.partitions} partition(s) in {self.seconds:.1f} s "
                f"(peak {self.peak_rss_mb:.0f} MiB) -> {self.path}")
        unseen = sum(self.unseen_entities.values())
        if unseen:
            text += f"; {unseen:,} entities seen only in valid/test"
        dropped = sum(self.dropped_edges.values())
        if dropped:
            text += f", {dropped:,} of their edges dropped"
        if self.edge_attributes:
            text += f"; edge attributes: {', '.join(self.edge_attributes)}"
        if self.comment_lines or self.blank_lines:
            text += f"; skipped {self.comment_lines:,} comment and {self.blank_lines:,} blank line(s)"
        for source, found in self.detected.items():
            text += f"\n  {source}: " + "; ".join(f"{key} {value}" for key, value in found.items())
        return text


class _EntityType:
    """Import-time state of one entity type: its id table and dictionary files."""

    def __init__(self, name: str, partitions: int, root: Path) -> None:
        self.name = name
        self.partitions = partitions
        self.table = StringIdTable()
        self.unseen_table = StringIdTable()  # distinct ids dropped by --unseen drop
        self.unseen = 0
        self.files = [root / dictionary_file(name, p) for p in range(partitions)]
        self.hashers = [xxhash.xxh3_64() for _ in range(partitions)]
        for path in self.files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def partition_counts(self) -> list[int]:
        n, p = self.table.count, self.partitions
        return [n // p + (1 if i < n % p else 0) for i in range(p)]

    def add_names(self, names: pa.Array, first_id: int) -> None:
        """Append new ids (with dense ids first_id, first_id + 1, ...) to their partitions' files."""
        n = len(names)
        for partition in range(self.partitions):
            start = (partition - first_id) % self.partitions
            if start >= n:
                continue
            part = names if self.partitions == 1 else names.take(np.arange(start, n, self.partitions))
            joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(part)], pa.int32()), part), "\n")
            data = joined[0].as_buffer().to_pybytes() + b"\n"
            with open(self.files[partition], "ab") as f:
                f.write(data)
            self.hashers[partition].update(data)

    def lookup(self, names: pa.Array, insert: bool) -> np.ndarray:
        before = self.table.count
        ids, new_names = self.table.lookup(names, insert)
        if len(new_names):
            if self.table.count - 1 > MAX_LOCAL_ID * self.partitions:
                raise InputError(f"entity type {self.name!r} has more than {MAX_LOCAL_ID:,} entities per partition; "
                                 "import with more partitions (--partitions)")
            self.add_names(new_names, before)
        return ids


class _Relations:
    """Relation names -> ids: the declared ones, or (dynamic) every name found in the files."""

    def __init__(self, config: Config) -> None:
        self.declared = bool(config.relations)
        self.configs: list[RelationConfig] = list(config.relations)
        self.index = {r.name: i for i, r in enumerate(self.configs)}
        self.type_names = list(config.entities)
        if not self.declared and len(config.entities) != 1:
            raise ConfigError("With several entity types, list the relations in [[relations]] so each edge's "
                              "entity types are known.")
        self.default_type = self.type_names[0]
        self.edges: dict[str, list[int]] = {}

    def add(self, name: str) -> int:
        rel = RelationConfig(name=name, lhs=self.default_type, rhs=self.default_type)
        self.index[name] = len(self.configs)
        self.configs.append(rel)
        return self.index[name]

    def ids_for(self, block: EdgeBlock, reader: Reader) -> np.ndarray:
        n = len(block)
        if block.rel is None:
            if self.declared:
                if len(self.configs) != 1:
                    raise InputError(f"has no relation column, but the config declares {len(self.configs)} "
                                     "relations; add a rel column (see --columns)", path=reader.path)
                return np.zeros(n, dtype=np.int64)
            rel = self.index.get(DEFAULT_RELATION)
            return np.full(n, self.add(DEFAULT_RELATION) if rel is None else rel, dtype=np.int64)
        encoded = block.rel.dictionary_encode()
        names = encoded.dictionary.to_pylist()
        mapping = np.empty(len(names), dtype=np.int64)
        for i, name in enumerate(names):
            rel = self.index.get(name)
            if rel is None:
                if self.declared:
                    row = int(np.flatnonzero(encoded.indices.to_numpy(zero_copy_only=False) == i)[0])
                    known = ", ".join(list(self.index)[:20])
                    raise InputError(f"relation {name!r} is not declared in the config (declared: {known})",
                                     path=reader.path, line=block.line(row),
                                     field=reader.roles.name_of(reader.roles.rel or 0), row_word=reader.row_word)
                rel = self.add(name)
            mapping[i] = rel
        return mapping[encoded.indices.to_numpy(zero_copy_only=False)]

    def check_types(self, block: EdgeBlock, rel_ids: np.ndarray, reader: Reader) -> None:
        """With lhs_type/rhs_type columns, each edge's types must be the types of its relation."""
        for side in ("lhs", "rhs"):
            column = block.columns.get(f"{side}_type")
            if column is None:
                continue
            encoded = column.dictionary_encode()
            names = encoded.dictionary.to_pylist()
            expected = np.array([getattr(self.configs[r], side) for r in range(len(self.configs))], dtype=object)
            got = np.array(names, dtype=object)[encoded.indices.to_numpy(zero_copy_only=False)]
            bad = np.flatnonzero(got != expected[rel_ids])
            if len(bad):
                row = int(bad[0])
                rel = self.configs[int(rel_ids[row])]
                raise InputError(
                    f"entity type {got[row]!r} disagrees with the config, where relation {rel.name!r} has "
                    f"{side} type {getattr(rel, side)!r}",
                    path=reader.path, line=block.line(row),
                    field=reader.roles.name_of(getattr(reader.roles, f"{side}_type")), row_word=reader.row_word,
                )


class _Buckets:
    """Appends edges to edges/<split>/bucket_<i>_<j>.npy.

    Rows wait in memory, per bucket, until BUCKET_BUFFER_BYTES of them are pending in all; then every
    pending bucket is written with one open of its file (appending each block of each bucket as
    it came costs an open per bucket per block: 140k opens for 30M edges over 256 buckets). A
    bucket still wholly in memory at close is shuffled there, by the very permutation that
    shuffle_rows would apply on disk, and written once."""

    def __init__(self, root: Path, split: str, partitions: int, attributes: Sequence[str]) -> None:
        self.root, self.split, self.partitions = root, split, partitions
        self.attributes = list(attributes)
        self.writers: dict[tuple[int, int], NpyAppender] = {}
        self.attribute_writers: dict[tuple[int, int, str], NpyAppender] = {}
        self.pending: dict[tuple[int, int], list[tuple[np.ndarray, dict[str, np.ndarray]]]] = {}
        self.pending_bytes = 0

    def append(self, lhs_part: np.ndarray, rhs_part: np.ndarray, rows: np.ndarray,
               attributes: dict[str, np.ndarray]) -> None:
        """Append rows (and their attribute values, aligned row for row) to their buckets. The rows are
        copied: the caller may reuse its arrays (the walk corpus refills one buffer per block)."""
        if self.partitions == 1:  # held back until a flush: a copy, not the caller's array
            self._add(0, 0, rows.copy(), {name: values.copy() for name, values in attributes.items()})
        else:
            key = lhs_part * self.partitions + rhs_part
            if self.partitions**2 <= 1 << 16:
                key = key.astype(np.uint16)  # a stable sort of 16-bit keys is a radix sort
            order = np.argsort(key, kind="stable")
            counts = np.bincount(key, minlength=self.partitions**2)
            rows = rows[order]
            attributes = {name: values[order] for name, values in attributes.items()}
            start = 0
            for bucket in np.flatnonzero(counts):
                end = start + int(counts[bucket])
                self._add(*divmod(int(bucket), self.partitions), rows[start:end],
                          {name: values[start:end] for name, values in attributes.items()})
                start = end
        if self.pending_bytes > BUCKET_BUFFER_BYTES:
            self.flush()

    def _add(self, i: int, j: int, rows: np.ndarray, attributes: dict[str, np.ndarray]) -> None:
        if (i, j) not in self.writers:
            self.writers[(i, j)] = NpyAppender(self.root / bucket_file(self.split, i, j), EDGE_DTYPE, 3)
            for name in self.attributes:
                self.attribute_writers[(i, j, name)] = NpyAppender(
                    self.root / attribute_file(self.split, i, j, name), np.float32, None)
        self.pending.setdefault((i, j), []).append((rows, attributes))
        self.pending_bytes += rows.nbytes + sum(values.nbytes for values in attributes.values())

    def flush(self) -> None:
        """Write every pending row to its bucket's files."""
        for (i, j), blocks in self.pending.items():
            self._write(i, j, blocks)
        self.pending.clear()
        self.pending_bytes = 0

    def _write(self, i: int, j: int, blocks: list[tuple[np.ndarray, dict[str, np.ndarray]]]) -> None:
        """One write per file of a bucket's pending blocks (many small writes cost more than the copy)."""
        self.writers[(i, j)].append(_joined([rows for rows, _ in blocks]))
        for name in self.attributes:
            self.attribute_writers[(i, j, name)].append(_joined([attributes[name] for _, attributes in blocks]))

    def close(self, shuffle: bool = False) -> list[dict[str, Any]]:
        """Finish every bucket file; with `shuffle`, permute each bucket's rows (and its attributes)
        by a permutation seeded by the bucket's position (shardgraph.data.shuffle)."""
        out = []
        for (i, j), writer in sorted(self.writers.items()):
            blocks = self.pending.pop((i, j), [])
            rows = sum(len(block) for block, _ in blocks)
            in_memory = shuffle and writer.rows == 0 and 1 < rows <= SHUFFLE_MEMORY_ROWS  # none on disk yet
            if in_memory:
                order = in_memory_order(rows, (SHUFFLE_SEED, i, j))
                blocks = [(_joined([block for block, _ in blocks])[order],
                           {name: _joined([a[name] for _, a in blocks])[order] for name in self.attributes})]
            if blocks:
                self._write(i, j, blocks)
            durable = not shuffle or in_memory  # a shuffled bucket is written again, durably, by shuffle_rows
            checksum = writer.close(durable)
            attribute_checksums = {name: self.attribute_writers[(i, j, name)].close(durable)
                                   for name in self.attributes}
            if shuffle and not in_memory and writer.rows > 1:
                checksum, *shuffled = shuffle_rows(
                    [writer.path, *(self.attribute_writers[(i, j, name)].path for name in self.attributes)],
                    seed=(SHUFFLE_SEED, i, j))
                attribute_checksums = dict(zip(self.attributes, shuffled, strict=True))
            entry: dict[str, Any] = {"lhs": i, "rhs": j, "edges": writer.rows, "file": bucket_file(self.split, i, j),
                                     "xxh3": checksum}
            if self.attributes:
                entry["attributes"] = {
                    name: {"file": attribute_file(self.split, i, j, name), "xxh3": attribute_checksums[name]}
                    for name in self.attributes
                }
            out.append(entry)
        return out


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _apply_partitions(config: Config, partitions: int | None) -> Config:
    """--partitions P: set P on every partitioned entity type, or on all types when none is partitioned."""
    if partitions is None:
        return config
    if partitions < 1:
        raise ConfigError(f"--partitions must be >= 1. Got {partitions} instead.")
    targets = [n for n, e in config.entities.items() if e.partitions > 1] or list(config.entities)
    entities = {
        name: EntityConfig(partitions=partitions if name in targets else e.partitions, dimension=e.dimension)
        for name, e in config.entities.items()
    }
    return config.replace(entities=entities)




def _source_list(sources: Source | Sequence[Source]) -> list[Source]:
    if is_edge_file(sources) or not isinstance(sources, (list, tuple)):
        return [sources]
    return list(sources)


def import_edges(
    edges: Source | Sequence[Source],
    out: str | Path,
    *,
    config: Config | str | Path | None = None,
    valid: Source | Sequence[Source] = (),
    test: Source | Sequence[Source] = (),
    format: str | None = None,
    columns: str | None = None,
    header: bool | None = None,
    delimiter: str | None = None,
    comment: str | None = None,
    relation: str | None = None,
    partitions: int | None = None,
    unseen: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    after_edges: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None,
) -> ImportSummary:
    """Import edges into a dataset directory of partitioned edge buckets.

    `edges` are the training edges; `valid`/`test` the held-out splits. Each is an edge file
    (path, glob or URI; text, Matrix Market or Parquet), a list of them, or a Python object:
    a pandas DataFrame, a pyarrow Table or RecordBatch iterator, a NetworkX graph (`relation`
    names the edge attribute holding the relation), a SciPy sparse matrix, a PyTorch Geometric
    Data/HeteroData or an (N, 2)/(N, 3) numpy array. Arguments left as None come from
    `config.data`; the delimiter, comments, header and columns of text files are detected
    unless given. The output appears complete, by one rename, or not at all. Raises InputError
    naming the file, line and field of the first bad input.
    `after_edges(root, entity_types)` runs inside the output directory before the manifest is
    written (node tables: shardgraph.data.nodes); the keys it returns are added to the manifest.
    """
    started = time.perf_counter()
    if not isinstance(config, Config):
        config = load_config(config)
    config = _apply_partitions(config, partitions)
    data = config.data
    header_setting = {"auto": None, "true": True, "false": False}[data.header]
    options = {
        "format": format or data.format,
        "columns": columns or data.columns,
        "header": header_setting if header is None else header,
        "delimiter": delimiter or data.delimiter,
        "comment": data.comment if comment is None else comment,
        "block_bytes": data.block_mb << 20,
    }
    unseen = unseen or data.unseen
    if unseen not in ("keep", "drop"):
        raise ConfigError(f"--unseen must be keep or drop. Got {unseen!r} instead.")
    sources = {"train": _source_list(edges), "valid": _source_list(valid), "test": _source_list(test)}
    if not sources["train"]:
        raise InputError("no edge files given")
    for source in sources["train"]:
        config = config_for(source, config)
    readers: dict[str, list[Reader]] = {
        split: [EdgeFileReader(s, **options) if is_edge_file(s)  # type: ignore[arg-type]
                else ObjectReader(s, columns=str(options["columns"]), relation=relation) for s in items]
        for split, items in sources.items()
    }
    attributes = _attribute_names(readers)

    num_partitions = max(e.partitions for e in config.entities.values())
    with exclusive(out, "import"), atomic_directory(out, overwrite=overwrite) as root:
        types = {name: _EntityType(name, e.partitions, root) for name, e in config.entities.items()}
        type_list = list(types.values())
        relations = _Relations(config)
        manifest_splits: dict[str, Any] = {}
        edge_counts: dict[str, int] = {}
        dropped: dict[str, int] = {}
        relation_edges: dict[str, np.ndarray] = {}
        # progress in bytes of the input files (compressed bytes of compressed ones), so the bar has an ETA;
        # in rows where the input is Python objects, which have no size on disk
        total_bytes = sum(r.size_bytes for items in readers.values() for r in items)
        bar = tqdm(total=total_bytes or None, unit="B" if total_bytes else " rows", unit_scale=True,
                   unit_divisor=1024 if total_bytes else 1000, disable=None if progress else True, desc="import",
                   mininterval=0.5)
        rows_seen = 0
        for split, split_readers in readers.items():
            if not split_readers:
                continue
            buckets = _Buckets(root, split, num_partitions, attributes)
            insert = split == "train" or unseen == "keep"
            per_relation = np.zeros(0, dtype=np.int64)
            kept_total = dropped_total = 0
            for reader in split_readers:
                counted = 0  # of the reader's bytes, already on the bar
                for block in read_ahead(reader):  # the next blocks are read while this one is mapped
                    rel_ids = relations.ids_for(block, reader)
                    relations.check_types(block, rel_ids, reader)
                    kept, n_dropped = _import_block(block, rel_ids, relations, types, type_list, insert,
                                                    split != "train", buckets)
                    kept_rel = rel_ids[kept] if kept is not None else rel_ids
                    counts = np.bincount(kept_rel, minlength=len(relations.configs))
                    per_relation = np.pad(per_relation, (0, len(counts) - len(per_relation))) + counts
                    kept_total += len(kept_rel)
                    dropped_total += n_dropped
                    rows_seen += len(block)
                    bar.update(reader.bytes_read - counted if total_bytes else len(block))
                    counted = reader.bytes_read
                    bar.set_postfix_str(f"{split}, {rows_seen:,} edges, "
                                        f"{sum(t.table.count for t in type_list):,} entities", refresh=False)
            edge_counts[split] = kept_total
            dropped[split] = dropped_total
            relation_edges[split] = per_relation
            manifest_splits[split] = {
                "edges": kept_total,
                "dropped_edges": dropped_total,
                "sources": [str(r.path) for r in split_readers],
                "buckets": buckets.close(shuffle=split == "train" and data.shuffle),
            }
        bar.close()
        for split in ("valid", "test"):
            manifest_splits.setdefault(split, {"edges": 0, "dropped_edges": 0, "sources": [], "buckets": []})
            edge_counts.setdefault(split, 0)

        extras = after_edges(root, types) if after_edges is not None else {}
        manifest = {
            **extras,
            "format": FORMAT,
            "edge_attributes": attributes,
            "format_version": FORMAT_VERSION,
            "shardgraph_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "num_partitions": num_partitions,
            "entity_types": {
                t.name: {"partitions": t.partitions, "count": t.table.count,
                         "partition_counts": t.partition_counts(), "unseen": t.unseen}
                for t in type_list
            },
            "relations_declared": relations.declared,
            "relations": [
                {"name": r.name, "lhs": r.lhs, "rhs": r.rhs,
                 "edges": {split: int(counts[i]) if i < len(counts) else 0
                           for split, counts in relation_edges.items()}}
                for i, r in enumerate(relations.configs)
            ],
            "unseen_policy": unseen,
            "train_shuffled": bool(data.shuffle),
            "splits": manifest_splits,
            "dictionaries": [
                {"type": t.name, "partition": p, "file": dictionary_file(t.name, p), "count": count,
                 "xxh3": t.hashers[p].hexdigest()}
                for t in type_list for p, count in enumerate(t.partition_counts())
            ],
        }
        (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")

    summary = ImportSummary(
        path=str(out),
        entities=sum(t.table.count for t in type_list),
        relations=len(relations.configs),
        edges=edge_counts,
        partitions=num_partitions,
        seconds=round(time.perf_counter() - started, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        unseen_entities={t.name: t.unseen for t in type_list if t.unseen},
        dropped_edges={s: n for s, n in dropped.items() if n},
        edge_attributes=attributes,
        comment_lines=sum(r.comment_lines for rs in readers.values() for r in rs),
        blank_lines=sum(r.blank_lines for rs in readers.values() for r in rs),
        detected={r.path: r.detected for rs in readers.values() for r in rs if r.detected},
    )
    log.debug(summary.line())
    return summary


def _attribute_names(readers: dict[str, list[Reader]]) -> list[str]:
    """The edge attributes every source has (in the first source's order); a source that lacks one
    another has stops the import, since the attribute files must align with every bucket."""
    everyone = [(r, [name for name, _ in r.roles.attributes]) for rs in readers.values() for r in rs]
    names = everyone[0][1]
    for reader, own in everyone:
        if set(own) != set(names):
            raise InputError(f"has edge attributes ({', '.join(own) or 'none'}) that differ from those of "
                             f"{everyone[0][0].path} ({', '.join(names) or 'none'}); give every file the same "
                             "columns, or skip a column with '-' in --columns", path=reader.path)
    return names


def _import_block(
    block: EdgeBlock,
    rel_ids: np.ndarray,
    relations: _Relations,
    types: dict[str, _EntityType],
    type_list: list[_EntityType],
    insert: bool,
    held_out: bool,
    buckets: _Buckets,
) -> tuple[np.ndarray | None, int]:
    """Map a block's ids, append its edges to their buckets. Returns (kept rows or None = all, dropped)."""
    type_index = {t.name: i for i, t in enumerate(type_list)}
    rel_lhs = np.array([type_index[r.lhs] for r in relations.configs], dtype=np.int64)
    rel_rhs = np.array([type_index[r.rhs] for r in relations.configs], dtype=np.int64)
    partitions = np.array([t.partitions for t in type_list], dtype=np.int64)
    side_types = {"lhs": rel_lhs[rel_ids], "rhs": rel_rhs[rel_ids]}
    ids = {side: np.empty(len(block), dtype=np.int64) for side in side_types}
    in_block = np.flatnonzero(np.bincount(rel_ids, minlength=len(rel_lhs)))  # a count, not a sort of the rows
    present = np.unique(np.concatenate([rel_lhs[in_block], rel_rhs[in_block]]))
    for t in present:
        entity_type = type_list[int(t)]
        # one lookup per type over both columns, in line order (lhs before rhs within a line), so
        # ids are assigned in order of first appearance in the file
        pieces: list[pa.Array] = []
        targets: list[tuple[str, np.ndarray | None, int]] = []
        keys: list[np.ndarray] = []
        for side_index, (side, types_of_rows) in enumerate(side_types.items()):
            rows = np.flatnonzero(types_of_rows == t)
            if len(rows) == len(block):
                pieces.append(block.columns[side])
                targets.append((side, None, len(rows)))
            elif len(rows):
                pieces.append(block.columns[side].take(pa.array(rows)))
                targets.append((side, rows, len(rows)))
            else:
                continue
            keys.append(rows * 2 + side_index)
        order = np.argsort(np.concatenate(keys), kind="stable") if len(pieces) > 1 else None
        names = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]
        if order is not None:
            names = names.take(pa.array(order))
        before = entity_type.table.count
        got = entity_type.lookup(names, insert)
        if held_out and insert:
            entity_type.unseen += entity_type.table.count - before
        if not insert:
            missing = got < 0
            if missing.any():
                _, new_names = entity_type.unseen_table.lookup(names.filter(pa.array(missing)), True)
                entity_type.unseen += len(new_names)
        if order is not None:
            unordered = np.empty_like(got)
            unordered[order] = got
            got = unordered
        start = 0
        for side, target_rows, n in targets:
            if target_rows is None:
                ids[side][:] = got[start : start + n]
            else:
                ids[side][target_rows] = got[start : start + n]
            start += n
    ends = {side: (ids[side], partitions[side_types[side]]) for side in side_types}
    (lhs, lhs_parts), (rhs, rhs_parts) = ends["lhs"], ends["rhs"]
    kept: np.ndarray | None = None
    n_dropped = 0
    attributes = block.attributes
    if not insert:
        ok = (lhs >= 0) & (rhs >= 0)
        if not ok.all():
            kept = np.flatnonzero(ok)
            n_dropped = len(ok) - len(kept)
            lhs, rhs, rel_ids = lhs[kept], rhs[kept], rel_ids[kept]
            lhs_parts, rhs_parts = lhs_parts[kept], rhs_parts[kept]
            attributes = {name: values[kept] for name, values in attributes.items()}
    rows = np.empty((len(lhs), 3), dtype=EDGE_DTYPE)
    rows[:, 0] = lhs // lhs_parts
    rows[:, 1] = rel_ids
    rows[:, 2] = rhs // rhs_parts
    buckets.append(lhs % lhs_parts, rhs % rhs_parts, rows, attributes)
    return kept, n_dropped
