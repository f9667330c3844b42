"""Trained embeddings as the objects other libraries use, without a file round trip: a pandas
DataFrame, a PyTorch Geometric Data/HeteroData (embeddings as `x`, rows in node order), and gensim
KeyedVectors. Reached through `EmbeddingModel.to_pandas()`, `.to_pyg()`, `.to_keyed_vectors()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardgraph.errors import QueryError

if TYPE_CHECKING:
    from shardgraph.embeddings.model import EmbeddingModel


def _require(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise QueryError(f"this needs {package} (pip install {package})") from None


def all_vectors(model: EmbeddingModel, entity_type: str | None = None) -> tuple[pa.Array, np.ndarray]:
    """(string ids (N,), embeddings (N, D) float32) of every entity of a type, in global id order."""
    spec = model.entity_spec(entity_type)
    names = model.index(spec.name).names
    blocks = [vectors.numpy() for _, vectors in model.blocks(spec)]
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, spec.dim), np.float32)
    return names, vectors.astype(np.float32, copy=False)


def to_pandas(model: EmbeddingModel, entity_type: str | None = None) -> Any:
    """DataFrame (N, D) indexed by id (and by entity type first, for a model with several types
    when `entity_type` is None); columns 0 .. D-1."""
    pd = _require("pandas", "pandas")
    types = [entity_type] if entity_type is not None or len(model.entity_types) == 1 else model.entity_types
    frames = []
    for name in types:
        ids, vectors = all_vectors(model, name)
        frame = pd.DataFrame(vectors, index=pd.Index(ids.to_pylist(), name="id"))
        frames.append(frame)
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, keys=types, names=["type", "id"])


def node_order(ids: pa.Array) -> tuple[np.ndarray, int] | None:
    """(node index of each id, number of nodes) when every id is a non-negative integer (the ids of
    an import from PyG, SciPy or numpy), else None."""
    try:
        index = pc.cast(ids, pa.int64()).to_numpy()
    except pa.ArrowInvalid:
        return None
    if len(index) and index.min() < 0:
        return None
    return index, int(index.max()) + 1 if len(index) else 0


def _typed_x(model: EmbeddingModel, entity_type: str, num_nodes: int | None) -> dict[str, Any]:
    """x (num_nodes, D) in node order (rows of nodes the model never saw are zero, `embedded` False),
    or, for ids that are not node indices, x in the model's order with the ids as `node_ids`."""
    import torch

    ids, vectors = all_vectors(model, entity_type)
    order = node_order(ids)
    if order is None:
        return {"x": torch.from_numpy(vectors.copy()), "node_ids": ids.to_pylist()}
    index, count = order
    count = max(count, num_nodes or 0)
    x = torch.zeros(count, vectors.shape[1])
    x[torch.from_numpy(index)] = torch.from_numpy(vectors)
    embedded = torch.zeros(count, dtype=torch.bool)
    embedded[torch.from_numpy(index)] = True
    return {"x": x, "embedded": embedded}


def to_pyg(model: EmbeddingModel, num_nodes: int | dict[str, int] | None = None) -> Any:
    """A `Data` (one entity type) or `HeteroData` (one node type per entity type) whose `x` holds
    the embeddings, row i = node i for integer ids; `num_nodes` pads isolated nodes at the end."""
    geometric = _require("torch_geometric.data", "torch-geometric")
    if len(model.entity_types) == 1:
        (name,) = model.entity_types
        count = num_nodes if isinstance(num_nodes, int) or num_nodes is None else num_nodes.get(name)
        return geometric.Data(**_typed_x(model, name, count))
    data = geometric.HeteroData()
    for name in model.entity_types:
        count = num_nodes.get(name) if isinstance(num_nodes, dict) else None
        for key, value in _typed_x(model, name, count).items():
            data[name][key] = value
    return data


def to_keyed_vectors(model: EmbeddingModel, entity_type: str | None = None) -> Any:
    """gensim KeyedVectors of one entity type (keys: the string ids), built in memory."""
    models = _require("gensim.models", "gensim")
    ids, vectors = all_vectors(model, entity_type)
    kv = models.KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(ids.to_pylist(), vectors)
    return kv
