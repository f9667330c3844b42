"""shardgraph: embeddings of very large graphs, trained bucket by bucket over partitions.

    import shardgraph
    shardgraph.import_edges(["train.tsv"], "data/mygraph", valid=["valid.tsv"])
    run = shardgraph.train(shardgraph.load_config("config.toml", ["data.dataset=data/mygraph"]))
    metrics = shardgraph.evaluate(run.path)
    model = shardgraph.load(run.path)

Names are imported lazily, so `import shardgraph` does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Config": "shardgraph.config",
    "load_config": "shardgraph.config",
    "default_config": "shardgraph.config",
    "dump_config": "shardgraph.config",
    "import_edges": "shardgraph.data.importer",
    "ImportSummary": "shardgraph.data.importer",
    "Dataset": "shardgraph.data.dataset",
    "train": "shardgraph.training.trainer",
    "Run": "shardgraph.training.trainer",
    "evaluate": "shardgraph.eval.evaluate",
    "load": "shardgraph.embeddings.model",
    "export": "shardgraph.embeddings.writers",
}

if TYPE_CHECKING:
    from shardgraph.config import Config, default_config, dump_config, load_config
    from shardgraph.data.dataset import Dataset
    from shardgraph.data.importer import ImportSummary, import_edges


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shardgraph' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Config",
    "Dataset",
    "ImportSummary",
    "Run",
    "__version__",
    "default_config",
    "dump_config",
    "evaluate",
    "export",
    "import_edges",
    "load",
    "load_config",
    "train",
]
