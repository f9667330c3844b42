"""Versioned, crash-safe checkpoints.

    RUN/checkpoint/
      manifest.json                           the last complete checkpoint (replaced atomically)
      <type>/p<part>.v<version>.emb.npy       (rows, D) embeddings, storage dtype
      <type>/p<part>.v<version>.state.npy     (rows,) float32 row-wise Adagrad accumulators
      relations.v<version>.npz                relation parameters, biases and their Adagrad state

Every file is written under a new versioned name (temp name, fsync, rename), so the files
of the last complete checkpoint are never overwritten. A checkpoint becomes current when
its manifest replaces the previous one; files no manifest refers to are then deleted.
A run killed at any moment resumes from the manifest on disk, whose files are complete
and whose checksums are verified on load. Partition files are plain .npy: evaluation and
export memory-map them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import xxhash

from shardgraph.errors import CheckpointError
from shardgraph.utils.atomic import atomic_file, atomic_write_text, disk_full_message, remove_stale_temporaries
from shardgraph.utils.npy import payload_checksum
from shardgraph.utils.paths import check_npy_size, member_path

log = logging.getLogger(__name__)

FORMAT = "shardgraph-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# numpy has no bfloat16: such tables are stored as their raw 16-bit patterns
NUMPY_STORAGE = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.uint16}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A zero-copy numpy view of a CPU tensor (bfloat16 as uint16 bit patterns)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def from_numpy(array: np.ndarray, dtype_name: str) -> torch.Tensor:
    """The inverse of to_numpy: a tensor of the named dtype sharing the array's memory.

    Read-only memory maps are shared as they are (torch warns about them): callers only read.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if dtype_name == "bfloat16":
        return tensor.view(torch.bfloat16)
    return tensor


@dataclass(frozen=True)
class PartitionFiles:
    """The files of one (entity type, partition) in a checkpoint."""

    embeddings: str
    state: str
    rows: int
    dim: int
    dtype: str
    embeddings_xxh3: str
    state_xxh3: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class CheckpointStore:
    """Reads and writes the checkpoints of one run directory."""

    def __init__(self, run_dir: str | Path, tag: str = "") -> None:
        self.run_dir = Path(run_dir)
        self.tag = f".{tag}" if tag else ""  # tells apart files of several trainers writing one directory
        self.root = self.run_dir / "checkpoint"
        self._version = 0
        self._version_lock = threading.Lock()  # partitions are written from the I/O thread too
        manifest = self.manifest()
        if manifest is not None:
            self._version = int(manifest["version"])
        self._version = max(self._version, self._highest_file_version())

    # ------------------------------------------------------------------ reading
    def manifest(self) -> dict[str, Any] | None:
        """The manifest of the last complete checkpoint, or None if there is none."""
        path = self.root / MANIFEST
        if not path.exists():
            return None
        return self._read_manifest(path)

    def _read_manifest(self, path: Path) -> dict[str, Any]:
        try:
            manifest: dict[str, Any] = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} is corrupt ({exc}).") from None
        except OSError as exc:
            raise CheckpointError(f"{path} cannot be read ({exc.strerror}).") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a shardgraph checkpoint manifest.")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path} has checkpoint format version {manifest.get('format_version')}; this shardgraph reads "
                f"version {FORMAT_VERSION}. Train a new run with this version."
            )
        try:
            int(manifest["version"])
            for parts in manifest["partitions"].values():
                for entry in parts.values():
                    self._check_entry(path, PartitionFiles(**entry))
            self.member(manifest["relations"]["file"], path)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path} is malformed ({type(exc).__name__}: {exc}).") from None
        return manifest

    def member(self, name: object, manifest: Path | None = None) -> Path:
        """The path of a file a manifest names, refused if it could lie outside the checkpoint directory."""
        return member_path(self.root, name, manifest or self.root / MANIFEST, CheckpointError)

    def _check_entry(self, manifest: Path, files: PartitionFiles) -> None:
        for name in (files.embeddings, files.state):
            self.member(name, manifest)
        if files.dtype not in TORCH_DTYPES or int(files.rows) < 0 or int(files.dim) < 0:
            raise CheckpointError(f"{manifest} describes {files.embeddings} as {files.dtype} ({files.rows}, "
                                  f"{files.dim}); the manifest is corrupt.")

    def partition_files(self, manifest: Mapping[str, Any], entity_type: str, partition: int) -> PartitionFiles:
        try:
            entry = manifest["partitions"][entity_type][str(partition)]
        except KeyError:
            raise CheckpointError(f"checkpoint has no partition {partition} of type {entity_type!r}.") from None
        return PartitionFiles(**entry)

    def verify(self, manifest: Mapping[str, Any]) -> None:
        """Check every file of a checkpoint against its checksum; CheckpointError names the first bad one."""
        for parts in manifest["partitions"].values():
            for entry in parts.values():
                files = PartitionFiles(**entry)
                self.load_partition(files, verify=True, mmap=True)
        self.load_relations(manifest, verify=True)

    def resumable(self) -> dict[str, Any] | None:
        """The newest complete checkpoint whose files are all intact, for --resume.

        The current manifest comes first, then the older versions kept in history
        (`training.keep_checkpoints`). A damaged newer one is logged and set aside (its history
        manifest renamed damaged-manifest.v*.json), and the intact one it falls back to becomes
        current. None if the run has no checkpoint; CheckpointError if every kept one is damaged.
        """
        candidates = [self.root / MANIFEST] if (self.root / MANIFEST).exists() else []
        candidates += sorted(self._history(), key=_manifest_version, reverse=True)
        if not candidates:
            return None
        problems: list[str] = []
        damaged_versions: set[int] = set()
        damaged: list[Path] = []
        for path in candidates:
            version: int | None = None
            try:
                manifest = self._read_manifest(path)
                version = int(manifest["version"])
                if version in damaged_versions:
                    damaged.append(path)  # the history copy of a manifest whose files are damaged
                    continue
                self.verify(manifest)
            except CheckpointError as exc:
                problems.append(str(exc))
                damaged.append(path)
                if path.parent.name == "history":
                    damaged_versions.add(_manifest_version(path))
                elif version is not None:
                    damaged_versions.add(version)
                continue
            if problems:
                log.warning("the latest checkpoint is damaged (%s); resuming from the intact %s instead",
                            "; ".join(problems), describe(manifest))
                for old in damaged:
                    if old.parent.name == "history":
                        old.rename(old.with_name("damaged-" + old.name))
                atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1))
            return manifest
        raise CheckpointError(f"every kept checkpoint of {self.run_dir} is damaged: {'; '.join(problems)}. "
                              "Start the run again without --resume.")

    def read_partition_into(self, files: PartitionFiles, embeddings: torch.Tensor, state: torch.Tensor) -> None:
        """Read a partition's files straight into (rows, D) / (rows,) tensors of the stored dtypes,
        checksums verified: no intermediate copy and no mapped file pages (the buffer's loads)."""
        for name, checksum, target in ((files.embeddings, files.embeddings_xxh3, embeddings),
                                       (files.state, files.state_xxh3, state)):
            path = self.member(name)
            array = to_numpy(target)
            try:
                with open(path, "rb") as f:
                    version = np.lib.format.read_magic(f)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, fortran, dtype = read_header(f)
                    if tuple(shape) != array.shape or fortran or np.dtype(dtype) != array.dtype:
                        raise CheckpointError(f"{path} holds {dtype} {tuple(shape)}, expected {array.dtype} "
                                              f"{array.shape}.")
                    view = array.reshape(-1).view(np.uint8).data
                    if f.readinto(view) != len(view):
                        raise CheckpointError(f"{path} is truncated: the checkpoint is incomplete.")
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{path} cannot be read ({exc}); the checkpoint is incomplete.") from None
            found = payload_checksum(array)
            if found != checksum:
                raise CheckpointError(f"{path} does not match its checksum (xxh3 {found}, the manifest says "
                                      f"{checksum}): the checkpoint is corrupt.")

    def load_partition(self, files: PartitionFiles, verify: bool = True,
                       mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (rows, D), state (rows,)) as numpy arrays (memory maps with mmap)."""
        arrays = []
        itemsize = 4 if files.dtype == "float32" else 2
        for name, checksum, shape, size in ((files.embeddings, files.embeddings_xxh3, (files.rows, files.dim),
                                             itemsize), (files.state, files.state_xxh3, (files.rows,), 4)):
            path = self.member(name)
            check_npy_size(path, shape, size, CheckpointError)
            try:
                array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{path} cannot be read ({exc}); the checkpoint is incomplete.") from None
            if array.shape != shape:
                raise CheckpointError(f"{path} has shape {array.shape}, the manifest says {shape}: the checkpoint "
                                      "is corrupt.")
            if verify:
                found = payload_checksum(np.asarray(array))
                if found != checksum:
                    raise CheckpointError(f"{path} does not match its checksum (xxh3 {found}, the manifest says "
                                          f"{checksum}): the checkpoint is corrupt.")
            arrays.append(array)
        embeddings, state = arrays
        return embeddings, state

    def load_relations(self, manifest: Mapping[str, Any], verify: bool = True) -> dict[str, np.ndarray]:
        entry = manifest["relations"]
        path = self.member(entry["file"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{path} cannot be read ({exc}).") from None
        found = xxhash.xxh3_64_hexdigest(data)
        if verify and found != entry["xxh3"]:
            raise CheckpointError(f"{path} does not match its checksum (xxh3 {found}, the manifest says "
                                  f"{entry['xxh3']}): the checkpoint is corrupt.")
        import io
        import zipfile

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"{path} cannot be read ({exc}): the checkpoint is corrupt.") from None

    # ------------------------------------------------------------------ writing
    def next_version(self) -> int:
        with self._version_lock:
            self._version += 1
            return self._version

    def write_partition(self, entity_type: str, partition: int, embeddings: torch.Tensor,
                        state: torch.Tensor) -> PartitionFiles:
        """Write a partition's tables under new versioned names (not yet part of a checkpoint)."""
        version = self.next_version()
        stem = f"{entity_type}/p{partition}.v{version}{self.tag}"
        emb_array = to_numpy(embeddings)
        state_array = to_numpy(state)
        emb_sum = self._write_npy(f"{stem}.emb.npy", emb_array)
        state_sum = self._write_npy(f"{stem}.state.npy", state_array)
        dtype = {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(embeddings.dtype, "float32")
        return PartitionFiles(f"{stem}.emb.npy", f"{stem}.state.npy", int(emb_array.shape[0]),
                              int(emb_array.shape[1]), dtype, emb_sum, state_sum)

    def discard(self, files: PartitionFiles) -> None:
        """Delete a partition's files that no manifest names (a working copy superseded before any commit)."""
        for name in (files.embeddings, files.state):
            self.member(name).unlink(missing_ok=True)

    def write_relations(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
        import io

        buffer = io.BytesIO()
        arrays: dict[str, Any] = {key: to_numpy(t) for key, t in tensors.items()}
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
        name = f"relations.v{self.next_version()}{self.tag}.npz"
        self._write_bytes(name, data)
        return {"file": name, "xxh3": xxhash.xxh3_64_hexdigest(data)}

    def commit(self, *, epoch: int, buckets_done: int, partitions: Mapping[str, Mapping[int, PartitionFiles]],
               relations: Mapping[str, str], extra: Mapping[str, Any] | None = None, keep: int = 1) -> int:
        """Make a checkpoint current: write its manifest atomically, then delete unreferenced files."""
        version = self.next_version()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": version,
            "time": time.time(),
            "epoch": epoch,
            "buckets_done": buckets_done,
            "partitions": {t: {str(p): f.to_dict() for p, f in parts.items()} for t, parts in partitions.items()},
            "relations": dict(relations),
            **(extra or {}),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        history = self.root / "history"
        history.mkdir(exist_ok=True)
        try:
            atomic_write_text(history / f"manifest.v{version}.json", json.dumps(manifest, indent=1))
            atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1))
        except OSError as exc:
            raise CheckpointError(disk_full_message(exc, self.root) or f"cannot write the checkpoint: {exc}") from exc
        self.collect_garbage(keep)
        return version

    def annotate(self, version: int, extra: Mapping[str, Any]) -> None:
        """Add or replace keys of the manifest of checkpoint `version` (a record that is known only after
        the checkpoint, such as the evaluation of it), atomically. Nothing happens if a newer checkpoint
        is already current."""
        manifest = self.manifest()
        if manifest is None or int(manifest["version"]) != version:
            return
        manifest.update(extra)
        text = json.dumps(manifest, indent=1)
        try:
            atomic_write_text(self.root / "history" / f"manifest.v{version}.json", text)
            atomic_write_text(self.root / MANIFEST, text)
        except OSError as exc:
            raise CheckpointError(disk_full_message(exc, self.root) or f"cannot write the checkpoint: {exc}") from exc

    def best_manifest(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """The manifest of the checkpoint that `manifest` marks as the best so far (key "best", written by
        training.eval_every), or None where it marks none."""
        best = manifest.get("best")
        if not best:
            return None
        if int(best["version"]) == int(manifest["version"]):
            return dict(manifest)
        path = self.root / "history" / f"manifest.v{int(best['version'])}.json"
        try:
            loaded: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}, the best checkpoint, cannot be read ({exc}).") from None
        return loaded

    def collect_garbage(self, keep: int = 1) -> None:
        """Delete files that none of the last `keep` complete manifests, nor the best checkpoint the current
        manifest marks, refers to (and stale temp files)."""
        manifests = sorted(self._history(), key=_manifest_version)
        keep_manifests = manifests[-keep:]
        current = self.manifest()
        best = current.get("best") if current is not None else None
        pinned = f"manifest.v{int(best['version'])}.json" if best else ""
        for old in manifests[:-keep]:
            if old.name == pinned:
                keep_manifests.append(old)
            else:
                old.unlink(missing_ok=True)
        remove_stale_temporaries(self.root / "history")  # a killed writer's; that version is never written again
        referenced: set[str] = set()
        for path in keep_manifests:
            try:
                m = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a damaged manifest protects no files
            referenced.add(m["relations"]["file"])
            for parts in m["partitions"].values():
                for entry in parts.values():
                    referenced.update((entry["embeddings"], entry["state"]))
        for path in self.root.rglob("*"):
            if not path.is_file() or path.parent.name == "history" or path.name == MANIFEST:
                continue
            if str(path.relative_to(self.root)) not in referenced:
                path.unlink(missing_ok=True)

    def _history(self) -> list[Path]:
        history = self.root / "history"
        return list(history.glob("manifest.v*.json")) if history.exists() else []

    def _highest_file_version(self) -> int:
        best = 0
        if self.root.exists():
            for path in self.root.rglob("*.v*"):
                try:
                    best = max(best, int(path.name.split(".v")[1].split(".")[0]))
                except (IndexError, ValueError):
                    continue
        return best

    def _write_npy(self, name: str, array: np.ndarray) -> str:
        self._write(name, lambda f: np.lib.format.write_array(f, array, allow_pickle=False))
        return payload_checksum(array)

    def _write_bytes(self, name: str, data: bytes) -> None:
        self._write(name, lambda f: f.write(data))

    def _write(self, name: str, fill: Callable[[BinaryIO], object]) -> None:
        path = self.root / name
        try:
            with atomic_file(path) as f:
                fill(f)
        except OSError as exc:
            raise CheckpointError(disk_full_message(exc, path) or f"cannot write {path}: {exc}") from exc


def _manifest_version(path: Path) -> int:
    return int(path.name.split(".v")[1].split(".")[0])


def describe(manifest: Mapping[str, Any]) -> str:
    return f"checkpoint v{manifest['version']} (epoch {manifest['epoch']}, {manifest['buckets_done']} buckets into it)"

