"""Named exceptions. Every error a user can act on derives from ShardgraphError.

The CLI prints the message of a ShardgraphError (no traceback) and exits with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class ShardgraphError(Exception):
    """An error caused by the input, the config or the environment, with a message that says what to do."""


class ConfigError(ShardgraphError, ValueError):
    """A config key is unknown, or its value is invalid. The message names the key path."""


class InputError(ShardgraphError):
    """A bad input file. The message names the file, the line (or row) and the field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        row_word: str = "line",
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"{row_word} {line}")
        if field is not None:
            where.append(f"field {field}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class DatasetError(ShardgraphError):
    """A dataset directory is missing, incomplete, of another format version, or corrupt."""


class CheckpointError(ShardgraphError):
    """A run directory or checkpoint is missing, incompatible or corrupt."""


class TrainingError(ShardgraphError):
    """Training cannot go on (a NaN loss, a memory bound that does not fit, ...)."""


class QueryError(ShardgraphError):
    """A query names an unknown id or relation, or asks for something impossible (k <= 0)."""
