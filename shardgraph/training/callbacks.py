"""Training callbacks: logging, the progress bar, the metrics log, evaluation every K epochs.

The loop calls the hooks; what to do at each point lives here, not in flags of the loop.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from shardgraph.config import Config
from shardgraph.eval.evaluate import evaluate
from shardgraph.storage.run import TrainedRun

log = logging.getLogger("shardgraph.train")


@dataclass
class BucketStats:
    epoch: int
    index: int  # position in the epoch's order
    buckets: int  # buckets in the epoch
    lhs: int
    rhs: int
    edges: int
    loss: float  # summed over the bucket's edges
    seconds: float
    loads: int = 0  # partition loads so far this epoch

    @property
    def edges_per_sec(self) -> float:
        return self.edges / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_loss(self) -> float:
        return self.loss / self.edges if self.edges else 0.0


@dataclass
class EpochStats:
    epoch: int
    edges: int = 0
    loss: float = 0.0
    seconds: float = 0.0
    partition_loads: int = 0
    eval: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_loss(self) -> float:
        return self.loss / self.edges if self.edges else 0.0


class Callback:
    """Hooks of the training loop; override what you need."""

    def on_train_begin(self, trainer: Any) -> None: ...

    def on_epoch_begin(self, epoch: int, buckets: int, edges: int) -> None: ...

    def on_progress(self, edges_done: int) -> None: ...

    def on_bucket_end(self, stats: BucketStats) -> None: ...

    def on_epoch_end(self, stats: EpochStats) -> None: ...

    def on_resumed_epoch_end(self, stats: EpochStats) -> None:
        """A resumed run's last epoch was checkpointed but stopped before its on_epoch_end finished
        (`stats` holds only the epoch): do what must follow every epoch."""

    def on_train_end(self, run: Any) -> None: ...


class LogCallback(Callback):
    """One log line per bucket and per epoch."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_bucket_end(self, s: BucketStats) -> None:
        log.info(f"epoch {s.epoch + 1}/{self.epochs} bucket {s.index + 1}/{s.buckets} ({s.lhs}, {s.rhs}): "
                 f"{s.edges:,} edges in {s.seconds:.2f} s ({s.edges_per_sec:,.0f} edges/s), loss {s.mean_loss:.4f}")

    def on_epoch_end(self, s: EpochStats) -> None:
        rate = s.edges / s.seconds if s.seconds else 0.0
        text = (f"epoch {s.epoch + 1}/{self.epochs} done: {s.edges:,} edges in {s.seconds:.1f} s "
                f"({rate:,.0f} edges/s), loss {s.mean_loss:.4f}, {s.partition_loads} partition loads")
        if s.eval:
            text += ", valid " + " ".join(f"{k} {v:.4f}" for k, v in s.eval.items() if isinstance(v, float))
        log.info(text)


class ProgressCallback(Callback):
    """A tqdm bar per epoch with edges/s and the running loss."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.bar: Any = None
        self.base = 0
        self.loss = 0.0
        self.edges = 0

    def on_epoch_begin(self, epoch: int, buckets: int, edges: int) -> None:
        # disable=None: no bar when stderr is not a terminal (logs redirected to a file)
        self.bar = tqdm(total=edges, unit=" edges", unit_scale=True, desc=f"epoch {epoch + 1}/{self.epochs}",
                        leave=False, mininterval=0.5, disable=None)
        self.base = 0
        self.loss = 0.0
        self.edges = 0

    def on_progress(self, edges_done: int) -> None:
        if self.bar is not None:
            self.bar.update(min(self.base + edges_done, self.bar.total) - self.bar.n)  # throttled by mininterval

    def on_bucket_end(self, stats: BucketStats) -> None:
        self.base += stats.edges
        self.loss += stats.loss
        self.edges += stats.edges
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.loss / max(1, self.edges):.4f}", refresh=False)
            self.bar.update(min(self.base, self.bar.total) - self.bar.n)

    def on_epoch_end(self, stats: EpochStats) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsLogCallback(Callback):
    """Appends one JSON line per bucket, epoch and evaluation to RUN/metrics.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_finite) + "\n")

    def on_bucket_end(self, stats: BucketStats) -> None:
        self._write({"event": "bucket", **asdict(stats), "edges_per_sec": stats.edges_per_sec})

    def on_epoch_end(self, stats: EpochStats) -> None:
        record = {"event": "epoch", **asdict(stats), "mean_loss": stats.mean_loss}
        self._write(record)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


class EvalCallback(Callback):
    """Evaluates the valid split every `training.eval_every` epochs, from the checkpoint just written."""

    def __init__(self, run_dir: Path, config: Config) -> None:
        self.run_dir = run_dir
        self.every = config.training.eval_every
        self.negatives = config.training.eval_negatives
        self.filtered = config.eval.filtered
        self.batch_size = config.eval.batch_size
        self.max_edges = config.eval.max_edges

    def on_epoch_end(self, stats: EpochStats) -> None:
        if (stats.epoch + 1) % self.every:
            return
        # the checkpoint just written, not the best one so far that a run opens by default
        result = evaluate(TrainedRun(self.run_dir, checkpoint="last"), split="valid", filtered=self.filtered,
                          negatives=self.negatives, batch_size=self.batch_size, max_edges=self.max_edges)
        stats.eval = {k: result[k] for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10", "auc")}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"event": "eval", **result, "epoch": stats.epoch + 1}) + "\n")

    def on_resumed_epoch_end(self, stats: EpochStats) -> None:
        self.on_epoch_end(stats)
