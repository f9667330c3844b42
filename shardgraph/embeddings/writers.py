"""`shardgraph export`: embeddings of a run to TSV, word2vec text, .npy, Parquet or HDF5.

Rows stream partition by partition, in blocks, so the whole table is never in memory; the
output appears by rename when complete. Vectors are exported as the model uses them (global
bias added, max-norm applied, when the config asks for those), in global id order: entity
type by type, partition by partition, local id by local id.
"""

from __future__ import annotations

import contextlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from shardgraph.errors import ShardgraphError
from shardgraph.registry import Registry
from shardgraph.storage.run import TrainedRun
from shardgraph.utils.atomic import disk_full_message, fsync_dir, temp_sibling
from shardgraph.utils.npy import npy_header

WRITERS: Registry[type[Writer]] = Registry("export format")
BLOCK_ROWS = 1 << 16


class Writer(ABC):
    """Writes (ids, vectors) blocks of one or more entity types to one output."""

    multiple_types = False  # can one output hold several entity types?

    def __init__(self, path: Path, dim: int, total: int, dtype: np.dtype) -> None:
        self.path, self.dim, self.total, self.dtype = path, dim, total, dtype

    def begin_type(self, entity_type: str, count: int) -> None:
        """A new entity type starts (its `count` rows follow)."""

    @abstractmethod
    def write(self, ids: pa.Array, vectors: np.ndarray) -> None:
        """Write a block: ids (n,) strings and vectors (n, D)."""

    def close(self) -> None:
        """Flush everything to the temporary path(s)."""

    def outputs(self) -> list[tuple[Path, Path]]:
        """(temporary path, final path) of every file written."""
        return [(self.temp, self.path)]

    @property
    def temp(self) -> Path:
        if not hasattr(self, "_temp"):
            self._temp = temp_sibling(self.path)
        return self._temp


def _text_table(ids: pa.Array, vectors: np.ndarray) -> pa.Table:
    columns = [ids] + [pa.array(vectors[:, j]) for j in range(vectors.shape[1])]
    return pa.table(columns, names=["id"] + [f"v{j}" for j in range(vectors.shape[1])])


@WRITERS.register("tsv")
class TsvWriter(Writer):
    """id<TAB>v1<TAB>...<TAB>vD per line (PyTorch-BigGraph's export format)."""

    delimiter = "\t"

    def __init__(self, path: Path, dim: int, total: int, dtype: np.dtype) -> None:
        super().__init__(path, dim, total, dtype)
        self.file = open(self.temp, "wb")  # noqa: SIM115 - closed in close()
        self.writer: pacsv.CSVWriter | None = None

    def write(self, ids: pa.Array, vectors: np.ndarray) -> None:
        table = _text_table(ids, vectors)
        if self.writer is None:
            options = pacsv.WriteOptions(include_header=False, delimiter=self.delimiter, quoting_style="none")
            self.writer = pacsv.CSVWriter(self.file, table.schema, write_options=options)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


@WRITERS.register("w2v")
class Word2VecWriter(TsvWriter):
    """word2vec text format: a "N D" header, then "id v1 ... vD" lines (gensim loads it as is)."""

    delimiter = " "

    def __init__(self, path: Path, dim: int, total: int, dtype: np.dtype) -> None:
        super().__init__(path, dim, total, dtype)
        self.file.write(f"{total} {dim}\n".encode())

    def write(self, ids: pa.Array, vectors: np.ndarray) -> None:
        bad = pc.match_substring_regex(ids, r"[\s]")
        if pc.any(bad).as_py():
            first = ids.filter(bad)[0].as_py()
            raise ShardgraphError(f"id {first!r} contains whitespace, which the word2vec format cannot hold; "
                                  "export to tsv, parquet, npy or h5 instead.")
        super().write(ids, vectors)


@WRITERS.register("npy")
class NpyWriter(Writer):
    """PATH: one (N, D) .npy array; PATH with suffix .ids.txt: the ids, one per line, same order."""

    def __init__(self, path: Path, dim: int, total: int, dtype: np.dtype) -> None:
        super().__init__(path, dim, total, dtype)
        self.ids_path = path.with_suffix(".ids.txt")
        self.ids_temp = temp_sibling(self.ids_path)
        self.file = open(self.temp, "wb")  # noqa: SIM115 - closed in close()
        self.file.write(npy_header(dtype, (total, dim)))
        self.ids = open(self.ids_temp, "wb")  # noqa: SIM115 - closed in close()
        self.rows = 0

    def write(self, ids: pa.Array, vectors: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(vectors, dtype=self.dtype).data)  # no copy of the bytes
        joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(ids)], pa.int32()), ids), "\n")
        self.ids.write(joined[0].as_buffer().to_pybytes() + b"\n")
        self.rows += len(ids)

    def close(self) -> None:
        if self.rows != self.total:
            raise ShardgraphError(f"wrote {self.rows} rows, expected {self.total}")
        for f in (self.file, self.ids):
            f.flush()
            os.fsync(f.fileno())
            f.close()

    def outputs(self) -> list[tuple[Path, Path]]:
        return [(self.ids_temp, self.ids_path), (self.temp, self.path)]


@WRITERS.register("parquet")
class ParquetWriter(Writer):
    """Columns `id` (string) and `vector` (fixed-size list of D floats)."""

    def __init__(self, path: Path, dim: int, total: int, dtype: np.dtype) -> None:
        super().__init__(path, dim, total, dtype)
        value_type = pa.float16() if dtype == np.float16 else pa.float32()
        self.schema = pa.schema([("id", pa.string()), ("vector", pa.list_(value_type, dim))])
        # embeddings are incompressible and never filtered on: no dictionary, statistics or compression for
        # the vectors (with them, writing float16 vectors ran at ~65k rows/s instead of ~300k)
        self.writer = pq.ParquetWriter(self.temp, self.schema, use_dictionary=False, write_statistics=["id"],
                                       compression={"id": "snappy", "vector.list.element": "none"})

    def write(self, ids: pa.Array, vectors: np.ndarray) -> None:
        flat = pa.array(np.ascontiguousarray(vectors, dtype=self.dtype).reshape(-1))
        vector = pa.FixedSizeListArray.from_arrays(flat, self.dim)
        self.writer.write_table(pa.table([ids, vector], schema=self.schema))

    def close(self) -> None:
        self.writer.close()


@WRITERS.register("h5")
class Hdf5Writer(Writer):
    """One dataset per entity type: /embeddings/<type> (N, D) and /ids/<type> (N,) strings."""

    multiple_types = True

    def __init__(self, path: Path, dim: int, total: int, dtype: np.dtype) -> None:
        super().__init__(path, dim, total, dtype)
        try:
            import h5py
        except ImportError:
            raise ShardgraphError("the h5 format needs h5py: pip install 'shardgraph[export]'") from None
        self.h5py = h5py
        self.file = h5py.File(self.temp, "w")
        self.row = 0
        self.embeddings: Any = None
        self.ids: Any = None

    def begin_type(self, entity_type: str, count: int) -> None:
        self.embeddings = self.file.create_dataset(f"embeddings/{entity_type}", (count, self.dim), dtype=self.dtype)
        self.ids = self.file.create_dataset(f"ids/{entity_type}", (count,), dtype=self.h5py.string_dtype())
        self.row = 0

    def write(self, ids: pa.Array, vectors: np.ndarray) -> None:
        n = len(ids)
        self.embeddings[self.row : self.row + n] = vectors.astype(self.dtype, copy=False)
        self.ids[self.row : self.row + n] = ids.to_pylist()
        self.row += n

    def close(self) -> None:
        self.file.close()


def _types_to_export(run: TrainedRun, entity_type: str | None, writer_class: type[Writer]) -> list[str]:
    types = list(run.model.entity_types)
    if entity_type is not None:
        if entity_type not in types:
            raise ShardgraphError(f"entity type {entity_type!r} is not in the run (types: {', '.join(types)}).")
        return [entity_type]
    if len(types) > 1 and not writer_class.multiple_types:
        raise ShardgraphError(f"the run has {len(types)} entity types ({', '.join(types)}); choose one with "
                              "--type, or export all of them to h5.")
    return types


def iter_blocks(run: TrainedRun, entity_type: str,
                block_rows: int = BLOCK_ROWS) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """(ids, float32 vectors) blocks of a type, in global id order."""
    spec = run.model.entity_types[entity_type]
    for partition in range(spec.partitions):
        names = pa.array(run.dataset.entity_names(entity_type, partition), pa.string())
        for start in range(0, spec.partition_counts[partition], block_rows):
            stop = min(start + block_rows, spec.partition_counts[partition])
            vectors = run.embeddings(entity_type, partition, rows=slice(start, stop))
            yield names.slice(start, stop - start), vectors.numpy()


def export(run: str | Path | TrainedRun, format: str, out: str | Path, *, entity_type: str | None = None,
           dtype: str = "float32", progress: bool = True, overwrite: bool = True) -> dict[str, Any]:
    """Export the embeddings of a run; returns a summary (rows, dim, files, seconds)."""
    import time

    started = time.perf_counter()
    trained = run if isinstance(run, TrainedRun) else TrainedRun(run)
    writer_class = WRITERS.get(format)
    if dtype not in ("float32", "float16"):
        raise ShardgraphError(f"--dtype must be float32 or float16. Got {dtype!r} instead.")
    types = _types_to_export(trained, entity_type, writer_class)
    dims = {trained.model.entity_types[t].dim for t in types}
    if len(dims) > 1 and format != "h5":
        raise ShardgraphError("the entity types have different dimensions; export one at a time with --type.")
    out_path = Path(out)
    if out_path.exists() and not overwrite:
        raise ShardgraphError(f"{out_path} already exists.")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    total = sum(trained.model.entity_types[t].count for t in types)
    writer = writer_class(out_path, dims.pop(), total, np.dtype(dtype))
    bar = tqdm(total=total, unit=" rows", unit_scale=True, disable=None if progress else True, desc=f"export {format}")
    try:
        for name in types:
            writer.begin_type(name, trained.model.entity_types[name].count)
            for ids, vectors in iter_blocks(trained, name):
                writer.write(ids, vectors)
                bar.update(len(ids))
        writer.close()
        for temp, final in writer.outputs():
            os.replace(temp, final)
        fsync_dir(out_path.parent)
    except OSError as exc:
        _discard(writer)
        raise ShardgraphError(disk_full_message(exc, out_path) or f"cannot write {out_path}: {exc}") from exc
    except BaseException:
        _discard(writer)
        raise
    finally:
        bar.close()
    return {"format": format, "rows": total, "dim": writer.dim, "dtype": dtype,
            "files": [str(final) for _, final in writer.outputs()],
            "seconds": round(time.perf_counter() - started, 3)}


def _discard(writer: Writer) -> None:
    with contextlib.suppress(Exception):
        writer.close()
    for temp, _ in writer.outputs():
        temp.unlink(missing_ok=True)


def export_relations(run: str | Path | TrainedRun, out: str | Path) -> dict[str, Any]:
    """Relation parameters to JSON (.json: names and nested lists) or npz (anything else)."""
    from shardgraph.utils.atomic import atomic_write_bytes, atomic_write_text

    trained = run if isinstance(run, TrainedRun) else TrainedRun(run)
    tables = {key: value.numpy() for key, value in trained.relation_tables.items()}
    names = [r.name for r in trained.model.relations]
    out_path = Path(out)
    if out_path.suffix == ".json":
        payload = {"relations": names, "operators": [r.operator for r in trained.model.relations],
                   "dynamic": trained.model.dynamic,
                   "parameters": {key: value.tolist() for key, value in tables.items()}}
        atomic_write_text(out_path, json.dumps(payload))
    else:
        import io

        buffer = io.BytesIO()
        arrays: dict[str, Any] = dict(tables)
        np.savez(buffer, relation_names=np.array(names), **arrays)
        atomic_write_bytes(out_path, buffer.getvalue())
    return {"relations": len(names), "parameters": sorted(tables), "files": [str(out_path)]}
