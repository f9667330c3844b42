"""Node tables: per-node features and labels, read in blocks and stored beside the edges.

    DATASET/nodes/<type>/part_<p>.indptr.npy   (n+1,) int64   sparse features (hash, multi_hot) of the
    DATASET/nodes/<type>/part_<p>.indices.npy  (nnz,) int32   partition's n nodes as CSR rows, row k =
    DATASET/nodes/<type>/part_<p>.values.npy   (nnz,) float32 local id k (a node absent from the tables: empty)
    DATASET/nodes/<type>/part_<p>.dense.npy    (n, D) float32 numeric (value, missing flag), dense vectors,
                                                              embeddings of another run
    DATASET/nodes/<type>/part_<p>.label_indptr.npy, .labels.npy   label ids of each node (CSR; multi-label)
    DATASET/nodes/<type>/classes.txt           label names, line k = label id k

Numeric columns are stored raw; GraphSAGE standardises them with its training nodes' statistics.
The tables are read in blocks of `nodes.block_mb`; encoded rows are spilled to disk in read order
and put in local id order at the end, one partition at a time, so memory stays bounded by the
block and one partition's row index.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shardgraph.config import FeatureConfig, NodesConfig
from shardgraph.data import encoders
from shardgraph.data.files import Location
from shardgraph.errors import ConfigError, DatasetError, InputError
from shardgraph.utils.npy import NpyAppender, file_checksum

log = logging.getLogger(__name__)


def node_file(entity_type: str, partition: int, name: str) -> str:
    return f"nodes/{entity_type}/part_{partition}.{name}.npy"


class EntityIds(Protocol):
    """What the importer's entity types offer: dense ids for names, inserting new ones."""

    partitions: int

    def lookup(self, names: pa.Array, insert: bool) -> np.ndarray: ...

    def partition_counts(self) -> list[int]: ...


@dataclass(frozen=True)
class FeatureSlot:
    """Where one feature column lives: `kind` sparse or dense, columns start .. start + width."""

    name: str
    encoder: str
    kind: str
    start: int
    width: int


def feature_layout(features: Mapping[str, FeatureConfig], dense_widths: Mapping[str, int]) -> list[FeatureSlot]:
    """Slots of the configured columns in the sparse and dense feature spaces, in config order."""
    slots, sparse_at, dense_at = [], 0, 0
    for name, feature in features.items():
        if feature.encoder in ("hash", "multi_hot"):
            slots.append(FeatureSlot(name, feature.encoder, "sparse", sparse_at, feature.n_features))
            sparse_at += feature.n_features
        else:
            width = 2 if feature.encoder == "numeric" else dense_widths[name]
            slots.append(FeatureSlot(name, feature.encoder, "dense", dense_at, width))
            dense_at += width
    return slots


def table_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "tsv" if name.endswith((".tsv", ".txt", ".tab")) else "csv"


def table_columns(path: Path) -> list[str]:
    """The header of a node table."""
    if not path.is_file():
        raise InputError("file not found", path=path)
    if table_format(path) == "parquet":
        return list(pq.ParquetFile(path).schema_arrow.names)
    with Location.of(path).open() as f:
        first = f.readline().decode("utf-8-sig", "replace").rstrip("\r\n")  # a byte order mark is not a name
    if table_format(path) == "tsv":
        return [c.strip() for c in first.split("\t")]
    return [c.strip() for c in next(csv.reader([first]))] if first else []


def read_table_blocks(path: Path, columns: Sequence[str], block_mb: int) -> Iterator[tuple[pa.Table, int]]:
    """Blocks of the given columns as strings, each with the file line (parquet: row) of its first row."""
    present = table_columns(path)
    for column in columns:
        if column not in present:
            raise InputError(f"the table has no column {column!r}; its columns are {', '.join(present)}",
                             path=path, line=1, field=column)
    if table_format(path) == "parquet":
        row = 1
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=list(columns)):
            table = pa.Table.from_batches([batch])
            yield table, row
            row += table.num_rows
        return
    line = 2
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block_mb << 20),
            parse_options=pacsv.ParseOptions(delimiter="\t" if table_format(path) == "tsv" else ",",
                                              quote_char=False if table_format(path) == "tsv" else '"'),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                 include_columns=list(columns), strings_can_be_null=False),
        )
        for batch in reader:
            table = pa.Table.from_batches([batch])
            yield table, line
            line += table.num_rows
    except pa.ArrowInvalid as exc:
        raise locate_table_error(path, len(present), exc) from None


def locate_table_error(path: Path, width: int, exc: Exception) -> InputError:
    """The line and field of the first row pyarrow rejected, found by a slow scan of the file
    (pyarrow's message names neither)."""
    tsv = table_format(path) == "tsv"
    with Location.of(path).open() as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                return InputError("is not valid UTF-8", path=path, line=number, field=f"byte {error.start + 1}")
            if number == 1 or not text:
                continue
            try:
                fields = text.split("\t") if tsv else next(csv.reader([text], strict=True))
            except csv.Error as error:
                return InputError(f"is not a well-formed CSV row ({error})", path=path, line=number)
            if len(fields) != width:
                return InputError(f"has {len(fields)} fields; the header has {width}", path=path, line=number,
                                  field=str(min(len(fields), width) + 1))
    return InputError(f"cannot be read as a table: {exc}", path=path)


@dataclass
class EncodedBlock:
    """A block of node rows encoded: sparse entries (block row, column, value) and (n, D) dense rows."""

    sparse: encoders.SparseBlock
    dense: np.ndarray


def encode_block(table: pa.Table, path: Path, first_line: int, features: Mapping[str, FeatureConfig],
                 layout: Sequence[FeatureSlot], dense_width: int, row_word: str = "line") -> EncodedBlock:
    """Encode the feature columns of one block (see `feature_layout`)."""
    n = table.num_rows
    rows, cols, vals = [], [], []
    dense = np.zeros((n, dense_width), dtype=np.float32)
    for slot in layout:
        feature = features[slot.name]
        column = table.column(slot.name).combine_chunks() if slot.encoder != "embedding" else None
        if slot.encoder == "hash":
            assert column is not None
            block = encoders.encode_hash(column, slot.name, feature)
        elif slot.encoder == "multi_hot":
            assert column is not None
            block = encoders.encode_multi_hot(column, str(path), first_line, slot.name, feature)
        elif slot.encoder == "numeric":
            assert column is not None
            values, missing = encoders.parse_floats(column, str(path), first_line, slot.name)
            dense[:, slot.start] = np.where(missing, 0.0, values)
            dense[:, slot.start + 1] = missing
            continue
        elif slot.encoder == "dense":
            assert column is not None
            dense[:, slot.start : slot.start + slot.width] = encoders.encode_dense(
                column, str(path), first_line, slot.name, slot.width, feature.separator)
            continue
        else:  # embedding: filled from the other run once ids are known
            continue
        rows.append(block.rows)
        cols.append(block.columns + slot.start)
        vals.append(block.values)
    if rows:
        sparse = encoders.SparseBlock(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals))
    else:
        sparse = encoders.SparseBlock(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    return EncodedBlock(sparse, dense)


def dense_widths(features: Mapping[str, FeatureConfig], files: Sequence[Path]) -> dict[str, int]:
    """Width of each dense/embedding column: configured, from the other run, or from the first row."""
    widths: dict[str, int] = {}
    for name, feature in features.items():
        if feature.encoder == "embedding":
            widths[name] = embedding_source(feature, name).dimension
        elif feature.encoder == "dense":
            if feature.dimension:
                widths[name] = feature.dimension
                continue
            for table, _ in read_table_blocks(files[0], [name], 1):
                first = next((v for v in table.column(name).to_pylist() if v), "")
                widths[name] = len(first.split(feature.separator) if feature.separator != " " else first.split())
                break
            if not widths.get(name):
                raise ConfigError(f"nodes.features.{name}.dimension must be set: the first row of {files[0]} "
                                  "has no vector to take it from.")
    return widths


class _EmbeddingSource:
    """The vectors of another run (encoder `embedding`), looked up by string id."""

    def __init__(self, run: str, name: str) -> None:
        from shardgraph.embeddings.model import load

        if not run:
            raise ConfigError(f"nodes.features.{name}.run must name a run directory (encoder embedding).")
        self.model = load(run)
        first_type = self.model.entity_types[0]
        self.dimension = int(self.model.vectors(self.model.index(first_type).name_of(np.array([0])),
                                                first_type).shape[1])

    def vectors(self, entity_type: str, names: list[str]) -> np.ndarray:
        """(n, D) vectors of the names; zeros for names the run does not know."""
        from shardgraph.data.dictionary import hash_strings

        out = np.zeros((len(names), self.dimension), dtype=np.float32)
        if entity_type not in self.model.entity_types or not names:
            return out
        index = self.model.index(entity_type)
        first, second = hash_strings(pa.array(names, pa.string()))
        pos = np.minimum(np.searchsorted(index.first, first), len(index.first) - 1)
        found = (index.first[pos] == first) & (index.second[pos] == second)
        ids = index.order[pos[found]]
        out[found] = self.model.vectors(index.name_of(ids), entity_type)
        return out


_SOURCES: dict[tuple[str, str], _EmbeddingSource] = {}


def embedding_source(feature: FeatureConfig, name: str) -> _EmbeddingSource:
    key = (feature.run, name)
    if key not in _SOURCES:
        _SOURCES[key] = _EmbeddingSource(feature.run, name)
    return _SOURCES[key]


def check_features(config: NodesConfig) -> None:
    for name, feature in config.features.items():
        if feature.encoder == "embedding" and not feature.run:
            raise ConfigError(f"nodes.features.{name}.run must name a run directory (encoder embedding).")
    if config.id_column in config.features:
        raise ConfigError(f"nodes.features.{config.id_column} is the id column; it cannot also be a feature.")


class _Spill:
    """Encoded rows of one partition in read order: local ids, nnz per row, entries, dense rows."""

    def __init__(self, root: Path, partition: int, dense_width: int) -> None:
        base = root / f"part_{partition}"
        self.ids = NpyAppender(f"{base}.ids", np.int64, 1)
        self.nnz = NpyAppender(f"{base}.nnz", np.int64, 1)
        self.columns = NpyAppender(f"{base}.cols", np.int32, 1)
        self.values = NpyAppender(f"{base}.vals", np.float32, 1)
        self.dense = NpyAppender(f"{base}.dense", np.float32, dense_width)
        self.label_ids = NpyAppender(f"{base}.label_ids", np.int64, 1)
        self.labels = NpyAppender(f"{base}.labels", np.int32, 1)

    def close(self) -> None:
        for appender in (self.ids, self.nnz, self.columns, self.values, self.dense, self.label_ids, self.labels):
            appender.close()


def import_node_tables(root: Path, entity_types: Mapping[str, EntityIds], config: NodesConfig,
                       files: Sequence[str | Path], labels_file: str | Path | None) -> dict[str, Any]:
    """Read node tables (and a label file) into `root`; returns the manifest's `node_tables` entry.

    Ids not yet in the dictionaries (isolated nodes) are added. Raises InputError naming file,
    line and column of the first bad value; the caller's atomic directory then removes it all.
    """
    check_features(config)
    paths = [Path(f) for f in files]
    if config.entity_type not in entity_types:
        raise ConfigError(f"nodes.entity_type {config.entity_type!r} is not an entity type of the config "
                          f"({', '.join(entity_types)}).")
    entity = entity_types[config.entity_type]
    widths = dense_widths(config.features, paths) if paths else {}
    layout = feature_layout(config.features, widths)
    sparse_width = sum(s.width for s in layout if s.kind == "sparse")
    dense_width = sum(s.width for s in layout if s.kind == "dense")
    folder = root / "nodes" / config.entity_type
    spill_root = folder / ".spill"
    spill_root.mkdir(parents=True, exist_ok=True)
    spills = [_Spill(spill_root, p, dense_width) for p in range(entity.partitions)]
    classes: dict[str, int] = {}
    class_counts: list[int] = []
    table_rows = 0

    def add_labels(ids: np.ndarray, labels: pa.Array, path: Path, first_line: int, column: str) -> None:
        rows, label_ids = [], []
        for i, text in enumerate(labels.to_pylist()):
            names = [t.strip() for t in (text or "").split(config.label_separator) if t.strip()]
            if ids[i] < 0:
                raise InputError("a label for an id that is neither in the edges nor in the node tables",
                                 path=path, line=first_line + i, field=column)
            for name in names:
                label = classes.setdefault(name, len(classes))
                if label == len(class_counts):
                    class_counts.append(0)
                class_counts[label] += 1
                rows.append(i)
                label_ids.append(label)
        if not rows:
            return
        node = ids[np.asarray(rows)]
        label_array = np.asarray(label_ids, dtype=np.int32)
        for p, spill in enumerate(spills):
            mine = node % entity.partitions == p
            if mine.any():
                spill.label_ids.append((node[mine] // entity.partitions)[:, None])
                spill.labels.append(label_array[mine, None])

    for path in paths:
        wanted = [config.id_column, *[s.name for s in layout if s.encoder != "embedding"]]
        if config.label_column:
            wanted.append(config.label_column)
        row_word = "row" if table_format(path) == "parquet" else "line"
        for table, first_line in read_table_blocks(path, wanted, config.block_mb):
            names = table.column(config.id_column).combine_chunks().cast(pa.string())
            empty = np.flatnonzero(~np.asarray(pa.compute.greater(pa.compute.binary_length(
                pa.compute.fill_null(names, "")), 0)))
            if len(empty):
                raise InputError("empty node id", path=path, line=first_line + int(empty[0]),
                                 field=config.id_column)
            ids = entity.lookup(names, True)
            encoded = encode_block(table, path, first_line, config.features, layout, dense_width, row_word)
            partition_of, local = ids % entity.partitions, ids // entity.partitions
            nnz = np.bincount(encoded.sparse.rows, minlength=len(ids))
            order = np.argsort(encoded.sparse.rows, kind="stable")
            entry_rows = encoded.sparse.rows[order]
            for p, spill in enumerate(spills):
                rows = np.flatnonzero(partition_of == p)
                if not len(rows):
                    continue
                spill.ids.append(local[rows, None])
                spill.nnz.append(nnz[rows, None])
                entries = order[np.isin(entry_rows, rows)] if entity.partitions > 1 else order
                spill.columns.append(encoded.sparse.columns[entries, None])
                spill.values.append(encoded.sparse.values[entries, None])
                spill.dense.append(encoded.dense[rows])
            if config.label_column:
                add_labels(ids, table.column(config.label_column).combine_chunks(), path, first_line,
                           config.label_column)
            table_rows += table.num_rows
    if labels_file:
        label_path = Path(labels_file)
        for names, labels, first_line in read_label_file(label_path, config.id_column):
            add_labels(entity.lookup(names, False), labels, label_path, first_line, "label")
    for spill in spills:
        spill.close()
    once = [name for name, k in classes.items() if class_counts[k] == 1]
    if once:
        log.warning("%d label(s) are given to a single node (%s%s): they cannot be both trained and evaluated",
                    len(once), ", ".join(once[:5]), ", ..." if len(once) > 5 else "")
    written = []
    counts = entity.partition_counts()
    for p in range(entity.partitions):
        written += _finish_partition(root, config.entity_type, p, counts[p], spill_root, dense_width)
    (folder / "classes.txt").write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
    written.append({"file": f"nodes/{config.entity_type}/classes.txt",
                    "xxh3": file_checksum(folder / "classes.txt")})
    for path in spill_root.iterdir():
        path.unlink()
    spill_root.rmdir()
    if any(s.encoder == "embedding" for s in layout):
        _fill_embeddings(root, config, layout, counts)
        for entry in written:
            entry["xxh3"] = file_checksum(root / entry["file"])
    return {
        "entity_type": config.entity_type,
        "files": [str(p) for p in paths],
        "labels_file": str(labels_file) if labels_file else "",
        "id_column": config.id_column,
        "rows": table_rows,
        "sparse_width": sparse_width,
        "dense_width": dense_width,
        "features": [{"name": s.name, "encoder": s.encoder, "kind": s.kind, "start": s.start, "width": s.width}
                     for s in layout],
        "feature_config": {name: _plain(f) for name, f in config.features.items()},
        "classes": len(classes),
        "class_counts": class_counts,
        "labelled": int(sum(class_counts)),
        "written": written,
    }


def _plain(feature: FeatureConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(feature)


def read_label_file(path: Path, id_column: str) -> Iterator[tuple[pa.Array, pa.Array, int]]:
    """(ids, labels, first line) blocks of a two-column label file (TSV or CSV, optional header)."""
    if not path.is_file():
        raise InputError("file not found", path=path)
    delimiter = "\t" if table_format(path) == "tsv" else ","
    with Location.of(path).open() as f:
        first = f.readline().decode("utf-8-sig", "replace").rstrip("\r\n").split(delimiter)
    header = first[0].strip() == id_column
    reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(skip_rows=1 if header else 0,
                                                                 column_names=["id", "label"]),
                            parse_options=pacsv.ParseOptions(delimiter=delimiter),
                            convert_options=pacsv.ConvertOptions(column_types={"id": pa.string(),
                                                                               "label": pa.string()}))
    line = 2 if header else 1
    try:
        for batch in reader:
            yield batch.column(0), batch.column(1), line
            line += batch.num_rows
    except pa.ArrowInvalid as exc:
        raise InputError(f"a label file has two columns, id and label: {exc}", path=path, line=line) from None


def _finish_partition(root: Path, entity_type: str, partition: int, count: int, spill_root: Path,
                      dense_width: int) -> list[dict[str, str]]:
    """Put one partition's spilled rows in local id order and write its final arrays."""
    base = spill_root / f"part_{partition}"
    ids = np.load(f"{base}.ids", mmap_mode="r")[:, 0]
    nnz = np.load(f"{base}.nnz", mmap_mode="r")[:, 0]
    if len(ids) != len(np.unique(ids)):
        seen = np.unique(ids, return_counts=True)
        duplicate = int(seen[0][seen[1] > 1][0])
        raise InputError(f"node with local id {duplicate} of partition {partition} appears in more than one row "
                         "of the node tables; each node must have one row")
    order = np.argsort(ids, kind="stable")
    row_nnz = np.zeros(count, dtype=np.int64)
    row_nnz[ids] = nnz
    indptr = np.concatenate([[0], np.cumsum(row_nnz)]).astype(np.int64)
    read_start = np.concatenate([[0], np.cumsum(nnz)])[:-1]
    columns = np.load(f"{base}.cols", mmap_mode="r")[:, 0]
    values = np.load(f"{base}.vals", mmap_mode="r")[:, 0]
    dense_in = np.load(f"{base}.dense", mmap_mode="r")
    out = {name: root / node_file(entity_type, partition, name)
           for name in ("indptr", "indices", "values", "dense", "label_indptr", "labels")}
    np.save(out["indptr"], indptr)
    indices_out = NpyAppender(out["indices"], np.int32, 1)
    values_out = NpyAppender(out["values"], np.float32, 1)
    dense_out = NpyAppender(out["dense"], np.float32, dense_width)
    chunk = 1 << 18
    for at in range(0, count, chunk):
        local = np.arange(at, min(at + chunk, count))
        # rows of these local ids in read order, -1 where the node had no table row
        where = np.full(len(local), -1, dtype=np.int64)
        sel = order[(ids[order] >= at) & (ids[order] < at + len(local))] if len(ids) else order
        where[ids[sel] - at] = sel
        has = where >= 0
        starts, lengths = read_start[where[has]], nnz[where[has]]
        gather = ranges(starts, lengths)
        indices_out.append(np.asarray(columns[gather])[:, None])
        values_out.append(np.asarray(values[gather])[:, None])
        block = np.zeros((len(local), dense_width), dtype=np.float32)
        block[has] = dense_in[where[has]]
        dense_out.append(block)
    label_ids = np.load(f"{base}.label_ids", mmap_mode="r")[:, 0]
    labels = np.load(f"{base}.labels", mmap_mode="r")[:, 0]
    label_order = np.lexsort((labels, label_ids))
    sorted_ids, sorted_labels = label_ids[label_order], labels[label_order]
    keep = np.ones(len(sorted_ids), dtype=bool)
    keep[1:] = (sorted_ids[1:] != sorted_ids[:-1]) | (sorted_labels[1:] != sorted_labels[:-1])
    sorted_ids, sorted_labels = sorted_ids[keep], sorted_labels[keep]
    np.save(out["label_indptr"], np.concatenate([[0], np.cumsum(np.bincount(sorted_ids, minlength=count))])
            .astype(np.int64))
    np.save(out["labels"], sorted_labels.astype(np.int32))
    for appender in (indices_out, values_out, dense_out):
        appender.close()
    return [{"file": node_file(entity_type, partition, name), "xxh3": file_checksum(path)}
            for name, path in out.items()]


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) over (starts, lengths)."""
    total = int(lengths.sum())
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.asarray(starts, dtype=np.int64)[row_of] + within


def _fill_embeddings(root: Path, config: NodesConfig, layout: Sequence[FeatureSlot], counts: list[int]) -> None:
    """Write the embedding columns: each node's vector in the other run (zeros where it has none)."""
    for p, count in enumerate(counts):
        if not count:
            continue
        dense = np.load(root / node_file(config.entity_type, p, "dense"), mmap_mode="r+")
        names = (root / f"entities/{config.entity_type}/part_{p}.txt").read_text(encoding="utf-8").split("\n")
        names = names[:count]
        for slot in layout:
            if slot.encoder == "embedding":
                source = embedding_source(config.features[slot.name], slot.name)
                dense[:, slot.start : slot.start + slot.width] = source.vectors(config.entity_type, names)
        dense.flush()


class NodeTables:
    """A read-only view of a dataset's node tables (`import --nodes`), partitions memory-mapped."""

    def __init__(self, path: str | Path, manifest: Mapping[str, Any]) -> None:
        entry = manifest.get("node_tables")
        if not entry:
            raise DatasetError(f"{path} has no node tables; import them with `shardgraph import ... --nodes "
                               "NODES.csv`.")
        self.path = Path(path)
        self.entry = dict(entry)
        self.entity_type: str = entry["entity_type"]
        self.sparse_width: int = entry["sparse_width"]
        self.dense_width: int = entry["dense_width"]
        self.layout = [FeatureSlot(**slot) for slot in entry["features"]]
        self.feature_config = {name: FeatureConfig(**f) for name, f in entry["feature_config"].items()}
        classes = self._member(f"nodes/{self.entity_type}/classes.txt").read_text(encoding="utf-8")
        self.classes: list[str] = classes.split("\n")[:-1] if classes else []

    def _member(self, name: str) -> Path:
        from shardgraph.utils.paths import member_path

        return member_path(self.path, name, self.path / "manifest.json", DatasetError)

    def array(self, partition: int, name: str) -> np.ndarray:
        file = self._member(node_file(self.entity_type, partition, name))
        try:
            array = np.load(file, mmap_mode="r")
            return array[:, 0] if array.ndim == 2 and name != "dense" else array
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{file} cannot be read: {exc}; re-import the dataset.") from None

    def verify(self) -> None:
        for entry in self.entry.get("written", []):
            file = self._member(entry["file"])
            if not file.is_file() or file_checksum(file) != entry["xxh3"]:
                raise DatasetError(f"{file} is missing or does not match its checksum; re-import the dataset.")


def import_graph(edges: Sequence[str | Path], out: str | Path, *, nodes: Sequence[str | Path] = (),
                 labels: str | Path | None = None, config: Any = None, **options: Any) -> Any:
    """`import_edges` plus node tables (files from `nodes`, else `config.nodes.files`) and labels.

    Everything lands in one atomic directory: a bad node table leaves nothing behind.
    """
    from shardgraph.config import Config, load_config
    from shardgraph.data.importer import import_edges

    if not isinstance(config, Config):
        config = load_config(config)
    files = list(nodes) or list(config.nodes.files)
    labels = labels or config.nodes.labels or None
    if not files and not labels:
        return import_edges(edges, out, config=config, **options)
    check_features(config.nodes)

    def add_nodes(root: Path, entity_types: dict[str, Any]) -> dict[str, Any]:
        return {"node_tables": import_node_tables(root, entity_types, config.nodes, files, labels)}

    return import_edges(edges, out, config=config, after_edges=add_nodes, **options)
