"""The dataset directory written by `shardgraph import`, and read by everything after it.

    DATASET/
      manifest.json                      format version, counts, checksums
      entities/<type>/part_<p>.txt       the ids of partition p, one per line; line k = local id k
      edges/<split>/bucket_<i>_<j>.npy   (N, 3) int32 rows (lhs local id, relation id, rhs local id)
                                         of the edges from lhs partition i to rhs partition j
      edges/<split>/bucket_<i>_<j>.<attribute>.npy
                                         (N,) float32 per-edge attribute (e.g. weight), row k of the
                                         bucket's row k; listed in the manifest's "edge_attributes"

Edge files are plain .npy, memory-mappable with np.load(mmap_mode="r").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from shardgraph.errors import DatasetError
from shardgraph.utils.npy import NpyReader, file_checksum, payload_checksum
from shardgraph.utils.paths import check_npy_size, member_path

FORMAT = "shardgraph-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "valid", "test")
EDGE_DTYPE = np.int32
LHS, REL, RHS = 0, 1, 2


def dictionary_file(entity_type: str, partition: int) -> str:
    return f"entities/{entity_type}/part_{partition}.txt"


def bucket_file(split: str, lhs_partition: int, rhs_partition: int) -> str:
    return f"edges/{split}/bucket_{lhs_partition}_{rhs_partition}.npy"


def attribute_file(split: str, lhs_partition: int, rhs_partition: int, attribute: str) -> str:
    return f"edges/{split}/bucket_{lhs_partition}_{rhs_partition}.{attribute}.npy"


@dataclass(frozen=True)
class EntityTypeInfo:
    name: str
    partitions: int
    partition_counts: tuple[int, ...]

    @property
    def count(self) -> int:
        return sum(self.partition_counts)

    @cached_property
    def offsets(self) -> np.ndarray:
        """Global id of the first entity of each partition: global = offsets[p] + local."""
        return np.concatenate([[0], np.cumsum(self.partition_counts)]).astype(np.int64)


@dataclass(frozen=True)
class RelationInfo:
    name: str
    lhs: str
    rhs: str
    edges: dict[str, int]


@dataclass(frozen=True)
class BucketInfo:
    lhs: int
    rhs: int
    edges: int
    file: str
    checksum: str
    attributes: dict[str, tuple[str, str]]  # name -> (file, xxh3)


class Dataset:
    """A read-only view of an imported dataset directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not self.path.is_dir():
            raise DatasetError(f"Dataset directory {self.path} does not exist; create it with `shardgraph import`.")
        if not manifest_path.is_file():
            raise DatasetError(f"{self.path} is not a shardgraph dataset (no {MANIFEST}); "
                               "create it with `shardgraph import`.")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{manifest_path} is corrupt: {exc}") from None
        if self.manifest.get("format") != FORMAT:
            raise DatasetError(f"{manifest_path} is not a shardgraph dataset manifest.")
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise DatasetError(f"{self.path} has dataset format version {version}; this shardgraph reads version "
                               f"{FORMAT_VERSION}. Re-import the edges with this version.")
        try:
            self.entity_types = {
                name: EntityTypeInfo(name, int(info["partitions"]), tuple(int(c) for c in info["partition_counts"]))
                for name, info in self.manifest["entity_types"].items()
            }
            self.relations = [
                RelationInfo(r["name"], r["lhs"], r["rhs"], dict(r["edges"])) for r in self.manifest["relations"]
            ]
            self.num_partitions: int = int(self.manifest["num_partitions"])
            self._dictionary_sums = {entry["file"]: entry["xxh3"] for entry in self.manifest.get("dictionaries", [])}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(f"{manifest_path} is malformed ({type(exc).__name__}: {exc}); re-import the "
                               "dataset.") from None
        self._verified: set[str] = set()
        self._check_counts(manifest_path)

    def _check_counts(self, manifest_path: Path) -> None:
        """Entity counts against the dictionary files, before anything sized by them is allocated:
        every id takes at least two bytes (a character and a newline)."""
        for entity_type in self.entity_types.values():
            if len(entity_type.partition_counts) != entity_type.partitions:
                raise DatasetError(f"{manifest_path}: entity type {entity_type.name!r} has "
                                   f"{entity_type.partitions} partitions but {len(entity_type.partition_counts)} "
                                   "partition counts; the manifest is corrupt.")
            for partition, count in enumerate(entity_type.partition_counts):
                path = self.dictionary_path(entity_type.name, partition)
                try:
                    size = path.stat().st_size
                except OSError as exc:
                    raise DatasetError(f"{path} cannot be read ({exc.strerror}); re-import the dataset.") from None
                if count < 0 or 2 * count > size:
                    raise DatasetError(f"{manifest_path} claims {count:,} entities of type {entity_type.name!r} "
                                       f"in partition {partition}, but {path} ({size:,} bytes) cannot hold them; "
                                       "the manifest is corrupt.")

    # ------------------------------------------------------------------ schema
    @cached_property
    def relation_index(self) -> dict[str, int]:
        return {r.name: i for i, r in enumerate(self.relations)}

    @property
    def relations_declared(self) -> bool:
        return bool(self.manifest.get("relations_declared"))

    def edge_count(self, split: str) -> int:
        return int(self.manifest["splits"].get(split, {}).get("edges", 0))

    def partitions_of(self, entity_type: str) -> int:
        return self.entity_types[entity_type].partitions

    # ------------------------------------------------------------------ edges
    def buckets(self, split: str) -> list[BucketInfo]:
        """Non-empty buckets of a split."""
        try:
            return [BucketInfo(int(b["lhs"]), int(b["rhs"]), int(b["edges"]), b["file"], b["xxh3"],
                               {name: (a["file"], a["xxh3"]) for name, a in b.get("attributes", {}).items()})
                    for b in self.manifest["splits"].get(split, {}).get("buckets", [])]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(f"{self.path / MANIFEST} has a malformed bucket entry in split {split!r} "
                               f"({type(exc).__name__}: {exc}); re-import the dataset.") from None

    def bucket(self, split: str, lhs_partition: int, rhs_partition: int) -> BucketInfo | None:
        for b in self.buckets(split):
            if b.lhs == lhs_partition and b.rhs == rhs_partition:
                return b
        return None

    def bucket_edges(self, split: str, lhs_partition: int, rhs_partition: int) -> np.ndarray:
        """(N, 3) int32 memory map of (lhs local id, relation id, rhs local id); empty if no edges."""
        info = self.bucket(split, lhs_partition, rhs_partition)
        if info is None:
            return np.zeros((0, 3), dtype=EDGE_DTYPE)
        self.bucket_path(info)
        return self._load_edges(info)

    def member(self, name: object) -> Path:
        """The path of a file the manifest names, refused if it could lie outside the dataset."""
        return member_path(self.path, name, self.path / MANIFEST, DatasetError)

    def dictionary_path(self, entity_type: str, partition: int) -> Path:
        return self.member(dictionary_file(entity_type, partition))

    def bucket_path(self, info: BucketInfo) -> Path:
        """The path of a bucket's edge file, its checksum and id ranges checked once per process
        (the training kernels index tables with these ids: a damaged file must not reach them)."""
        path = self.member(info.file)
        if info.file not in self._verified:
            self._load_edges(info)  # its size, shape and dtype
            self._verify_bucket(path, info)
            self._verified.add(info.file)
        return path

    def _check_payload(self, path: Path, array: np.ndarray, expected: str) -> None:
        found = payload_checksum(np.asarray(array))
        if found != expected:
            raise DatasetError(f"{path} does not match its checksum (xxh3 {found}, the manifest says {expected}): "
                               "the file is damaged; re-import the dataset.")

    def _verify_bucket(self, path: Path, info: BucketInfo) -> None:
        """The bucket's checksum and id ranges, in one pass of plain reads (a memory map's touched pages would
        count in this process's memory for as long as the map lives: a whole bucket)."""
        reader = NpyReader(path)
        limits = np.array([[self._count(r.lhs, info.lhs), self._count(r.rhs, info.rhs)] for r in self.relations]
                          or [[0, 0]], dtype=np.int64)  # (relations, 2): the id bounds of each relation's ends
        hasher = xxhash.xxh3_64()
        out_of_range: DatasetError | None = None
        step = 1 << 20
        for start in range(0, info.edges, step):
            block = reader.read(start, start + step)
            hasher.update(memoryview(block.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
            if out_of_range is None:
                try:
                    self._check_ranges(path, limits, block, start)
                except DatasetError as exc:
                    out_of_range = exc
        found = hasher.hexdigest()
        if found != info.checksum:  # said first: a damaged file, whatever ids the damage made
            raise DatasetError(f"{path} does not match its checksum (xxh3 {found}, the manifest says "
                               f"{info.checksum}): the file is damaged; re-import the dataset.")
        if out_of_range is not None:
            raise out_of_range

    def _check_ranges(self, path: Path, limits: np.ndarray, block: np.ndarray, start: int) -> None:
        """Every edge of `block` (rows start.. of the bucket) names a relation and entities the dataset has."""
        relations = len(self.relations)
        smallest = limits.min(axis=0)  # a block whose ids are below every relation's limits is fine
        if len(block) == 0:
            return
        if (block.min(axis=0) >= 0).all() and block[:, REL].max() < relations \
                and block[:, LHS].max() < smallest[0] and block[:, RHS].max() < smallest[1]:
            return
        wide = block.astype(np.int64)
        rel = wide[:, REL]
        bad = (rel < 0) | (rel >= relations)
        if not bad.any():
            bad = (wide[:, LHS] < 0) | (wide[:, LHS] >= limits[rel, 0]) | (wide[:, RHS] < 0) | \
                  (wide[:, RHS] >= limits[rel, 1])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DatasetError(f"{path} row {start + row}: edge {block[row].tolist()} names an entity or relation "
                               "the dataset does not have; the file is damaged: re-import the dataset.")

    def _count(self, entity_type: str, partition: int) -> int:
        spec = self.entity_types.get(entity_type)
        if spec is None:
            raise DatasetError(f"{self.path / MANIFEST} names the entity type {entity_type!r} in a relation but "
                               "does not declare it; the manifest is corrupt.")
        counts = spec.partition_counts
        return counts[partition] if spec.partitions > 1 and partition < len(counts) else counts[0] if counts else 0

    def _load_edges(self, info: BucketInfo) -> np.ndarray:
        path = self.member(info.file)
        if info.edges < 0:
            raise DatasetError(f"{self.path / MANIFEST} claims {info.edges} edges in {path}; the manifest is corrupt.")
        check_npy_size(path, (info.edges, 3), np.dtype(EDGE_DTYPE).itemsize, DatasetError)
        try:
            edges = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path} cannot be read: {exc}") from None
        if edges.shape != (info.edges, 3) or edges.dtype != EDGE_DTYPE:
            raise DatasetError(f"{path} holds {edges.dtype} {edges.shape}; the manifest says int32 ({info.edges}, 3). "
                               "The dataset is corrupt: re-import it.")
        return edges

    @property
    def edge_attributes(self) -> tuple[str, ...]:
        """Names of the per-edge float32 attributes the import kept (e.g. "weight")."""
        return tuple(self.manifest.get("edge_attributes", ()))

    def bucket_attribute(self, split: str, lhs_partition: int, rhs_partition: int, name: str) -> np.ndarray:
        """(N,) float32 memory map of one attribute of a bucket's edges; empty if the bucket has no edges."""
        if name not in self.edge_attributes:
            raise DatasetError(f"{self.path} has no edge attribute {name!r}; "
                               f"it has {list(self.edge_attributes) or 'none'}.")
        info = self.bucket(split, lhs_partition, rhs_partition)
        if info is None:
            return np.zeros(0, dtype=np.float32)
        return self._load_attribute(info, name)

    def _load_attribute(self, info: BucketInfo, name: str) -> np.ndarray:
        if name not in info.attributes:
            raise DatasetError(f"The manifest of {self.path} lists no {name!r} file for {info.file}; "
                               "the dataset is corrupt: re-import it.")
        path = self.member(info.attributes[name][0])
        check_npy_size(path, (max(info.edges, 0),), 4, DatasetError)
        try:
            values = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path} cannot be read: {exc}") from None
        if values.shape != (info.edges,):
            raise DatasetError(f"{path} holds {values.shape} values; the manifest says ({info.edges},). "
                               "The dataset is corrupt: re-import it.")
        return values

    def iter_edges(self, split: str) -> Iterator[tuple[BucketInfo, np.ndarray]]:
        for info in self.buckets(split):
            self.bucket_path(info)
            yield info, self._load_edges(info)

    def global_edges(self, split: str) -> np.ndarray:
        """All edges of a split as (N, 3) int64 rows (lhs global id, relation id, rhs global id).

        Global ids are per entity type: offsets[partition] + local id.
        """
        parts = []
        lhs_type_of = np.array([self._type_index(r.lhs) for r in self.relations], dtype=np.int64)
        rhs_type_of = np.array([self._type_index(r.rhs) for r in self.relations], dtype=np.int64)
        type_list = list(self.entity_types.values())
        for info, edges in self.iter_edges(split):
            rows = np.asarray(edges, dtype=np.int64).copy()
            rel = rows[:, REL]
            rows[:, LHS] += _offset_for(type_list, lhs_type_of[rel], info.lhs)
            rows[:, RHS] += _offset_for(type_list, rhs_type_of[rel], info.rhs)
            parts.append(rows)
        if not parts:
            return np.zeros((0, 3), dtype=np.int64)
        return np.concatenate(parts)

    def _type_index(self, name: str) -> int:
        return list(self.entity_types).index(name)

    # ------------------------------------------------------------------ dictionaries
    def entity_names(self, entity_type: str, partition: int) -> list[str]:
        """The string ids of one partition, in local id order."""
        path = self.dictionary_path(entity_type, partition)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{path} cannot be read ({exc.strerror}); re-import the dataset.") from None
        expected_sum = self._dictionary_sums.get(dictionary_file(entity_type, partition))
        if expected_sum is not None:
            found = xxhash.xxh3_64_hexdigest(data)
            if found != expected_sum:
                raise DatasetError(f"{path} does not match its checksum (xxh3 {found}, the manifest says "
                                   f"{expected_sum}): the file is damaged; re-import the dataset.")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path} is not UTF-8 ({exc}); the dataset is corrupt.") from None
        names = text.split("\n")
        if names and names[-1] == "":
            names.pop()
        expected = self.entity_types[entity_type].partition_counts[partition]
        if len(names) != expected:
            raise DatasetError(f"{path} has {len(names)} ids; the manifest says {expected}. The dataset is corrupt.")
        return names

    def entity_name_array(self, entity_type: str, partition: int) -> pa.Array:
        """The string ids of one partition as an arrow array (large_string), in local id order.

        No Python string per id: the file's bytes are the array's data and its line ends give the
        offsets (16 bytes an id plus its text, where a list of str takes about 60).
        """
        path = self.path / dictionary_file(entity_type, partition)
        data = np.fromfile(path, dtype=np.uint8)
        ends = np.flatnonzero(data == ord("\n"))
        if len(data) and data[-1] != ord("\n"):
            ends = np.append(ends, len(data))
        expected = self.entity_types[entity_type].partition_counts[partition]
        if len(ends) != expected:
            raise DatasetError(f"{path} has {len(ends)} ids; the manifest says {expected}. The dataset is corrupt.")
        if len(ends) == 0:
            return pa.array([], pa.large_string())
        starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
        # the offsets of the ids with the newline between them dropped: shift each start left by its line number
        lines = np.arange(len(ends), dtype=np.int64)
        offsets = np.concatenate([starts - lines, [ends[-1] - lines[-1]]]).astype(np.int64)
        keep = np.ones(len(data), dtype=bool)
        keep[ends[ends < len(data)]] = False
        text = data[keep]
        array = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(text))
        array.validate(full=True)  # the bytes are UTF-8 (the importer wrote them), checked all the same
        return array

    def all_entity_names(self, entity_type: str) -> list[str]:
        """String ids of a type in global id order."""
        names: list[str] = []
        for p in range(self.entity_types[entity_type].partitions):
            names.extend(self.entity_names(entity_type, p))
        return names

    # ------------------------------------------------------------------ integrity
    def verify(self) -> None:
        """Check every file against the checksums of the manifest."""
        for entry in self.manifest.get("dictionaries", []):
            path = self.member(entry["file"])
            if not path.is_file():
                raise DatasetError(f"{path} is missing; re-import the dataset.")
            found = file_checksum(path)
            if found != entry["xxh3"]:
                raise DatasetError(f"{path} does not match its checksum (xxh3 {found}, the manifest says "
                                   f"{entry['xxh3']}): the file is damaged; re-import the dataset.")
        for split in SPLITS:
            for info in self.buckets(split):
                self.bucket_path(info)
                for name, (file, checksum) in info.attributes.items():
                    self._check_payload(self.member(file), self._load_attribute(info, name), checksum)

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "entities": sum(t.count for t in self.entity_types.values()),
            "relations": len(self.relations),
            "edges": {split: self.edge_count(split) for split in SPLITS},
            "partitions": self.num_partitions,
        }


def _offset_for(types: list[EntityTypeInfo], type_index: np.ndarray, partition: int) -> np.ndarray:
    """Global offset of `partition` for each row's entity type (partition 0 for unpartitioned types)."""
    offsets = np.array([t.offsets[partition if t.partitions > 1 else 0] for t in types], dtype=np.int64)
    return offsets[type_index]
