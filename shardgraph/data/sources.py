"""Edges from Python objects: pandas DataFrames, pyarrow Tables and RecordBatch iterators, NetworkX
graphs, SciPy sparse matrices, PyTorch Geometric `Data`/`HeteroData`, numpy arrays.

Each object becomes an `ObjectReader`: a stream of arrow record batches with named columns, read
block by block like a file (same column roles, same checks, same EdgeBlocks), so the importer
treats it as one more edge file. Sources that can be sliced (DataFrames, Tables, arrays, sparse
matrices, edge_index tensors) are converted a block at a time; NetworkX graphs are walked edge by
edge into blocks. Integer node ids become their decimal strings ("0", "1", ...), so that
`model.to_pyg()` can put the embeddings back in node order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from shardgraph.config import Config, EntityConfig, RelationConfig
from shardgraph.data.columns import ColumnRoles
from shardgraph.data.reader import EdgeBlock, arrow_column, check_block
from shardgraph.errors import ConfigError, InputError

BLOCK_ROWS = 1 << 20


def is_edge_file(source: object) -> bool:
    from pathlib import Path

    return isinstance(source, (str, Path))


def _module_of(obj: object) -> str:
    return type(obj).__module__.split(".", 1)[0]


class ObjectReader:
    """Reads the edges of one Python object block by block. Iterate to get EdgeBlocks."""

    row_word = "row"
    comment_lines = 0
    blank_lines = 0

    def __init__(self, obj: object, *, columns: str = "auto", relation: str | None = None,
                 block_rows: int = BLOCK_ROWS) -> None:
        self.path = f"<{type(obj).__module__}.{type(obj).__qualname__}>"
        self.block_rows = block_rows
        self.size_bytes = self.bytes_read = 0  # no file: the import's progress counts its rows instead
        self.detected: dict[str, str] = {"source": self.path}
        self.schema, self._batches = _to_batches(obj, relation, block_rows, self.path)
        names = list(self.schema.names)
        if columns == "auto":
            roles = ColumnRoles.from_names(names)
            if roles is None:
                floating = sum(pa.types.is_floating(self.schema.field(n).type) for n in names[2:])
                roles = ColumnRoles.for_width(len(names), self.path, floating)
                roles = ColumnRoles(**{**roles.__dict__, "names": tuple(names)})
        elif "=" in columns:
            roles = ColumnRoles.by_name(columns, names, self.path)
        else:
            roles = ColumnRoles.parse(columns)
            roles = ColumnRoles(**{**roles.__dict__, "names": tuple(names[: roles.width])})
        self.roles = roles
        self.detected["columns"] = roles.describe()

    def __iter__(self) -> Iterator[EdgeBlock]:
        names = list(self.schema.names)
        row = 1
        for batch in self._batches:
            if batch.num_rows == 0:
                continue
            columns = {role: arrow_column(batch, names[c], c, row, pa.string(), self.roles, self.path)
                       for role, c in self.roles.present()}
            attributes = {name: arrow_column(batch, names[c], c, row, pa.float32(), self.roles, self.path)
                          .to_numpy(zero_copy_only=False) for name, c in self.roles.attributes}
            block = EdgeBlock(columns, first_line=row, attributes=attributes)
            check_block(block, self.roles, self.path, self.row_word, newline_forbidden=True)
            row += batch.num_rows
            yield block
        if row == 1:
            raise InputError("has no edges", path=self.path)


def _ids(values: Any) -> pa.Array:
    """Node ids as an arrow array (strings, or integers that become strings later)."""
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        return pa.array(array.astype(np.int64, copy=False))
    if array.dtype.kind in "US":
        return pa.array(array.astype(str))
    return pa.array([str(v) for v in array.tolist()], pa.string())


def _to_batches(obj: object, relation: str | None, rows: int,
                where: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """(schema, batches) of any supported object."""
    module = _module_of(obj)
    if isinstance(obj, pa.Table):
        return obj.schema, iter(obj.to_batches(max_chunksize=rows))
    if isinstance(obj, pa.RecordBatch):
        return obj.schema, iter([obj])
    if isinstance(obj, pa.RecordBatchReader):
        return obj.schema, iter(obj)
    if module == "pandas":
        return _pandas(obj, rows)
    if module == "networkx":
        return _networkx(obj, relation, rows)
    if module == "scipy":
        return _scipy(obj, rows)
    if module == "torch_geometric":
        if type(obj).__name__ == "HeteroData":
            return _hetero(obj, rows)
        return _pyg(obj, rows)
    if isinstance(obj, np.ndarray) or (isinstance(obj, tuple) and all(isinstance(a, np.ndarray) for a in obj)):
        return _numpy(obj, rows, where)
    if module == "torch":
        return _numpy(obj.cpu().numpy(), rows, where)  # type: ignore[attr-defined]
    if isinstance(obj, Iterable):
        return _batch_iterator(iter(obj), where)
    raise InputError("is not something edges can be read from: give edge files, a pandas DataFrame, a pyarrow "
                     "Table or RecordBatch iterator, a NetworkX graph, a SciPy sparse matrix, a PyTorch Geometric "
                     "Data/HeteroData or a numpy array of shape (N, 2) or (N, 3)", path=where)


def _batch_iterator(batches: Iterator[Any], where: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """An iterator of RecordBatches (or Tables): its first item gives the schema."""
    first = next(batches, None)
    if first is None:
        raise InputError("has no edges (an empty iterator)", path=where)
    if not isinstance(first, (pa.RecordBatch, pa.Table)):
        raise InputError(f"yields {type(first).__name__}; an iterator must yield pyarrow RecordBatches", path=where)

    def chain() -> Iterator[pa.RecordBatch]:
        for item in (first, *()):
            yield from _as_batches(item)
        for item in batches:
            yield from _as_batches(item)

    return first.schema, chain()


def _as_batches(item: pa.RecordBatch | pa.Table) -> list[pa.RecordBatch]:
    return item.to_batches() if isinstance(item, pa.Table) else [item]


def _pandas(df: Any, rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    df = df.rename(columns=str)
    schema = pa.Schema.from_pandas(df.iloc[:1], preserve_index=False)

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(df), rows):
            yield pa.RecordBatch.from_pandas(df.iloc[start : start + rows], schema=schema, preserve_index=False)

    return schema, batches()


def _numpy(obj: Any, rows: int, where: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """(N, 2) / (N, 3) array (lhs, rhs / lhs, rel, rhs), or a tuple of 1-D arrays (lhs, rhs[, weight])."""
    if isinstance(obj, tuple):
        if len(obj) not in (2, 3) or len({len(a) for a in obj}) != 1:
            raise InputError("must be a tuple (lhs, rhs) or (lhs, rhs, weight) of 1-D arrays of one length",
                             path=where)
        columns = {"lhs": obj[0], "rhs": obj[1]}
        if len(obj) == 3:
            columns["weight"] = np.asarray(obj[2], dtype=np.float32)
    else:
        if obj.ndim != 2 or obj.shape[1] not in (2, 3):
            raise InputError(f"has shape {obj.shape}; give an (N, 2) array of (lhs, rhs) or (N, 3) of "
                             "(lhs, rel, rhs)", path=where)
        names = ["lhs", "rhs"] if obj.shape[1] == 2 else ["lhs", "rel", "rhs"]
        columns = {name: obj[:, i] for i, name in enumerate(names)}
    return _sliced(columns, rows)


def _sliced(columns: dict[str, Any], rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Record batches of `rows` rows from equal-length numpy columns, converted one slice at a time."""
    length = len(next(iter(columns.values())))

    def convert(name: str, values: Any) -> pa.Array:
        return pa.array(np.asarray(values, dtype=np.float32)) if name == "weight" else _ids(values)

    schema = pa.RecordBatch.from_pydict({n: convert(n, v[:1]) for n, v in columns.items()}).schema

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, length, rows):
            yield pa.RecordBatch.from_pydict({n: convert(n, v[start : start + rows]) for n, v in columns.items()})

    return schema, batches()


def _scipy(matrix: Any, rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A sparse matrix: one edge row -> column per stored entry, its value kept as the weight."""
    coo = matrix.tocoo()
    return _sliced({"lhs": coo.row, "rhs": coo.col, "weight": coo.data}, rows)


def _networkx(graph: Any, relation: str | None, rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A NetworkX graph: one edge per graph edge (each direction of an undirected edge once, as
    stored); the relation from edge attribute `relation`; a numeric `weight` attribute kept."""
    edges = graph.edges(data=True)
    has_weight = any("weight" in data for _, _, data in graph.edges(data=True))
    fields = [pa.field("lhs", pa.string()), pa.field("rhs", pa.string())]
    if relation is not None:
        fields.insert(1, pa.field("rel", pa.string()))
    if has_weight:
        fields.append(pa.field("weight", pa.float32()))
    schema = pa.schema(fields)

    def batches() -> Iterator[pa.RecordBatch]:
        lhs: list[str] = []
        rhs: list[str] = []
        rel: list[str] = []
        weight: list[float] = []
        for u, v, data in edges:
            lhs.append(str(u))
            rhs.append(str(v))
            if relation is not None:
                value = data.get(relation)
                if value is None:
                    raise InputError(f"edge ({u!r}, {v!r}) has no attribute {relation!r} (the relation)",
                                     path="<networkx graph>")
                rel.append(str(value))
            if has_weight:
                weight.append(float(data.get("weight", 1.0)))
            if len(lhs) == rows:
                yield _nx_batch(schema, lhs, rhs, rel, weight)
                lhs, rhs, rel, weight = [], [], [], []
        if lhs:
            yield _nx_batch(schema, lhs, rhs, rel, weight)

    return schema, batches()


def _nx_batch(schema: pa.Schema, lhs: list[str], rhs: list[str], rel: list[str], weight: list[float]) -> pa.RecordBatch:
    data = {"lhs": lhs, "rhs": rhs, "rel": rel, "weight": weight}
    return pa.RecordBatch.from_pydict({name: data[name] for name in schema.names}, schema=schema)


def _edge_weight(store: Any) -> Any:
    """A 1-D edge_weight (or a 1-D / single-column edge_attr) of a PyG store, or None."""
    for key in ("edge_weight", "edge_attr"):
        value = getattr(store, key, None) if key in store else None
        if value is not None and (value.dim() == 1 or (value.dim() == 2 and value.shape[1] == 1)):
            return value.reshape(-1).detach().cpu().numpy()
    return None


def _pyg(data: Any, rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A PyG Data: edge_index (2, E) of node indices; edge_weight kept as the weight."""
    edge_index = data.edge_index.detach().cpu().numpy()
    columns: dict[str, Any] = {"lhs": edge_index[0], "rhs": edge_index[1]}
    weight = _edge_weight(data)
    if weight is not None:
        columns["weight"] = weight
    return _sliced(columns, rows)


def hetero_relations(data: Any) -> list[tuple[tuple[str, str, str], str]]:
    """(edge type, relation name) of a HeteroData: the edge type's middle name, or
    'src__rel__dst' where two edge types share it."""
    edge_types = list(data.edge_types)
    counts: dict[str, int] = {}
    for _, rel, _ in edge_types:
        counts[rel] = counts.get(rel, 0) + 1
    return [(et, et[1] if counts[et[1]] == 1 else "__".join(et)) for et in edge_types]


def _hetero(data: Any, rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A PyG HeteroData: one relation per edge type, its end types the edge type's node types."""
    relations = hetero_relations(data)
    with_weight = any(_edge_weight(data[et]) is not None for et, _ in relations)
    fields = [pa.field("lhs", pa.int64()), pa.field("rel", pa.string()), pa.field("rhs", pa.int64())]
    if with_weight:
        fields.append(pa.field("weight", pa.float32()))
    schema = pa.schema(fields)

    def batches() -> Iterator[pa.RecordBatch]:
        for edge_type, name in relations:
            edge_index = data[edge_type].edge_index.detach().cpu().numpy()
            weight = _edge_weight(data[edge_type])
            for start in range(0, edge_index.shape[1], rows):
                end = start + rows
                n = len(edge_index[0, start:end])
                columns = [pa.array(edge_index[0, start:end].astype(np.int64)), pa.array([name] * n, pa.string()),
                           pa.array(edge_index[1, start:end].astype(np.int64))]
                if with_weight:
                    columns.append(pa.array(np.ones(n, np.float32) if weight is None else
                                            weight[start:end].astype(np.float32)))
                yield pa.RecordBatch.from_arrays(columns, schema=schema)

    return schema, batches()


def config_for(obj: object, config: Config) -> Config:
    """The config to import `obj` with: for a HeteroData, its node types as entity types and its edge
    types as relations, unless the config declares relations itself."""
    if _module_of(obj) != "torch_geometric" or type(obj).__name__ != "HeteroData" or config.relations:
        return config
    data: Any = obj
    default = next(iter(config.entities.values()))
    entities = {str(t): config.entities.get(str(t), EntityConfig(partitions=default.partitions,
                                                                  dimension=default.dimension))
                for t in data.node_types}
    relations = tuple(RelationConfig(name=name, lhs=src, rhs=dst) for (src, _, dst), name in hetero_relations(data))
    try:
        return config.replace(entities=entities, relations=relations)
    except ConfigError as exc:
        raise ConfigError(f"the HeteroData's node and edge types do not make a valid config: {exc}") from None
