"""What a training run will hold in memory, computed before it allocates anything.

The bound covers the partition slots (embeddings in the storage dtype and their Adagrad
accumulators), the relation parameters, each worker's edge chunk and batch temporaries,
and the processes themselves (the Python + torch runtime, measured for the trainer and
assumed for each spawned worker).
"""

from __future__ import annotations

from dataclasses import dataclass

from shardgraph.config import Config
from shardgraph.errors import TrainingError
from shardgraph.model.model import Model
from shardgraph.storage.buffer import slot_count
from shardgraph.utils.memory import tree_pss_bytes

MIB = 1 << 20
WORKER_RUNTIME_MB = 160  # private memory of a spawned worker (torch and shardgraph imported), PSS
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class MemoryPlan:
    embeddings_mb: float
    optimizer_mb: float
    relations_mb: float
    workers_mb: float
    runtime_mb: float
    slots: int

    @property
    def total_mb(self) -> float:
        return self.embeddings_mb + self.optimizer_mb + self.relations_mb + self.workers_mb + self.runtime_mb

    def describe(self) -> str:
        return (f"{self.total_mb:,.0f} MiB planned: embeddings {self.embeddings_mb:,.0f} ({self.slots} partition "
                f"slot(s) per type), Adagrad {self.optimizer_mb:,.0f}, relations {self.relations_mb:,.0f}, "
                f"workers' edges and batches {self.workers_mb:,.0f}, runtime {self.runtime_mb:,.0f}")


def plan_memory(config: Config, model: Model, slots: int, workers: int, threaded: bool = False) -> MemoryPlan:
    storage = DTYPE_BYTES[config.storage.storage_dtype]
    embeddings = optimizer = 0
    for spec in model.entity_types.values():
        count = slot_count(spec.partitions, slots if slots < spec.partitions else 0)
        rows = max(spec.partition_counts) if spec.partition_counts else 0
        embeddings += count * rows * spec.dim * storage
        optimizer += count * rows * 4
    relations = 2 * 4 * sum(t.numel() for t in model.init_relation_params().values())
    t = config.training
    dim = max(spec.dim for spec in model.entity_types.values())
    candidates = max(spec.partition_counts[0] for spec in model.entity_types.values()) if t.all_negs \
        else t.num_batch_negs + t.num_uniform_negs
    # a chunk read as int32 rows, its shuffled copy and the permutation; each batch's temporaries
    per_worker = t.edge_chunk_size * (3 * 4 * 2 + 8) + t.batch_size * (candidates * 4 * 6 + dim * 4 * 24)
    runtime = tree_pss_bytes() + (workers if workers > 1 and not threaded else 0) * WORKER_RUNTIME_MB * MIB
    return MemoryPlan(embeddings / MIB, optimizer / MIB, relations / MIB, workers * per_worker / MIB, runtime / MIB,
                      slots)


def check_memory(plan: MemoryPlan, config: Config, partitions: int) -> None:
    """Refuse a run whose planned memory exceeds storage.memory_limit_mb, saying which knob to turn."""
    limit = config.storage.memory_limit_mb
    if limit <= 0 or plan.total_mb <= limit:
        return
    hints = [f"import with more partitions (now {partitions})"]
    if plan.slots > 2:
        hints.append(f"set storage.buffer_partitions lower (now {plan.slots} in memory; 2 is the minimum)")
    if config.storage.storage_dtype == "float32":
        hints.append('set storage.storage_dtype = "float16" (halves the embeddings)')
    if config.training.workers != 1:
        hints.append("use fewer training.workers")
    raise TrainingError(f"This run needs about {plan.describe()}; that is above storage.memory_limit_mb = {limit}. "
                        f"To fit: {'; or '.join(hints)}.")
