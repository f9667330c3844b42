"""Files derived from a dataset and kept in its directory (the CSR of the graph, the index of known
edges): built on first use, rebuilt when the edges they were built from change."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import xxhash

from shardgraph.data.dataset import Dataset


def source_key(dataset: Dataset, splits: Iterable[str]) -> str:
    """A hash of what a derived file is built from: the splits' buckets and their attributes' checksums."""
    hasher = xxhash.xxh3_64()
    for split in splits:
        hasher.update(f"{split}:".encode())
        for info in dataset.buckets(split):
            hasher.update(f"{info.lhs},{info.rhs},{info.edges},{info.checksum};".encode())
            for name, (_, checksum) in sorted(info.attributes.items()):
                hasher.update(f"{name}={checksum};".encode())
    return hasher.hexdigest()


def is_current(directory: Path, source: str, format_version: int) -> bool:
    """Whether `directory` holds a complete build (its meta.json) of this version from this source."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(meta.get("format_version") == format_version and meta.get("source") == source)
