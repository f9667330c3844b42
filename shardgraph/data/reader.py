"""Streaming readers for edge files: TSV/CSV (plain or gzip) and Parquet, with pyarrow.

The fast path parses a block of the file at a time with pyarrow's multi-threaded CSV
reader, so memory stays bounded by the block size. When pyarrow rejects a block (a line
with the wrong number of fields, bytes that are not UTF-8 ...), a slow line-by-line scan
of the file from that block on finds the exact line and field, and raises an InputError
that names them.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shardgraph.errors import InputError

ROLES = ("lhs", "rel", "rhs", "lhs_type", "rhs_type")
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class ColumnRoles:
    """Which column of a file holds the lhs id, the rhs id and (optionally) the relation name."""

    lhs: int
    rhs: int
    rel: int | None
    width: int  # fields per line
    lhs_type: int | None = None  # optional columns naming the entity type of each end
    rhs_type: int | None = None

    @classmethod
    def parse(cls, text: str) -> ColumnRoles:
        """Parse 'lhs,rel,rhs' / 'lhs,rhs' / 'rhs,-,lhs,rel' ('-' = a column to skip)."""
        roles = [part.strip() for part in text.split(",")]
        bad = [r for r in roles if r not in ROLES and r != "-"]
        repeated = [r for r in ROLES if roles.count(r) > 1]
        if bad or repeated or "lhs" not in roles or "rhs" not in roles:
            raise InputError(
                "--columns must list lhs and rhs once each; rel, lhs_type and rhs_type at most once; and '-' "
                f"for a column to skip (e.g. lhs,rel,rhs or lhs,rhs). Got {text!r} instead."
            )

        def find(role: str) -> int | None:
            return roles.index(role) if role in roles else None

        return cls(lhs=roles.index("lhs"), rhs=roles.index("rhs"), rel=find("rel"), width=len(roles),
                   lhs_type=find("lhs_type"), rhs_type=find("rhs_type"))

    @classmethod
    def for_width(cls, width: int, path: str | Path) -> ColumnRoles:
        if width == 3:
            return cls(lhs=0, rel=1, rhs=2, width=3)
        if width == 2:
            return cls(lhs=0, rhs=1, rel=None, width=2)
        raise InputError(
            f"has {width} fields per line; say which hold what with --columns (e.g. lhs,rel,rhs,-)",
            path=path, line=1,
        )

    def role_names(self) -> list[str]:
        roles = ["-"] * self.width
        for role in ROLES:
            column = getattr(self, role)
            if column is not None:
                roles[column] = role
        return roles

    def name_of(self, column: int) -> str:
        return f"{column + 1} ({self.role_names()[column].replace('-', 'skipped')})"

    def present(self) -> list[tuple[str, int]]:
        """(role, column) of every role the file has, lhs first."""
        return [(role, getattr(self, role)) for role in ROLES if getattr(self, role) is not None]


@dataclass
class EdgeBlock:
    """A block of edges as arrow string arrays, with the line (or row) number of its first edge."""

    columns: dict[str, pa.Array]  # role -> array, for every role the file has
    first_line: int

    @property
    def lhs(self) -> pa.Array:
        return self.columns["lhs"]

    @property
    def rhs(self) -> pa.Array:
        return self.columns["rhs"]

    @property
    def rel(self) -> pa.Array | None:
        return self.columns.get("rel")

    def __len__(self) -> int:
        return len(self.columns["lhs"])


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    return "tsv"


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def open_binary(path: Path) -> BinaryIO:
    """Open a plain or gzip file for reading bytes (gzip detected by its magic number)."""
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


class EdgeFileReader:
    """Reads one edge file block by block. Iterate to get EdgeBlocks."""

    def __init__(
        self,
        path: str | Path,
        *,
        format: str = "auto",
        columns: str = "auto",
        header: bool = False,
        block_bytes: int = 16 << 20,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError("does not exist", path=self.path)
        if not self.path.is_file():
            raise InputError("is not a file", path=self.path)
        if self.path.stat().st_size == 0:
            raise InputError("is empty", path=self.path)
        self.format = detect_format(self.path) if format == "auto" else format
        self.header = header
        self.block_bytes = block_bytes
        self.row_word = "row" if self.format == "parquet" else "line"
        self.delimiter = "," if self.format == "csv" else "\t"
        self._columns_text = columns
        self.roles = self._resolve_roles(columns)

    # ------------------------------------------------------------------ set-up
    def _resolve_roles(self, columns: str) -> ColumnRoles:
        if self.format == "parquet":
            return self._parquet_roles(columns)
        if columns != "auto":
            return ColumnRoles.parse(columns)
        first = self._first_data_line()
        return ColumnRoles.for_width(len(self._split(first, 1 + int(self.header))), self.path)

    def _first_data_line(self) -> bytes:
        try:
            with open_binary(self.path) as f:
                lines = iter(f)
                try:
                    if self.header:
                        next(lines)
                    first = next(lines)
                except StopIteration:
                    raise InputError("is empty (no edges)", path=self.path) from None
        except (OSError, EOFError) as exc:
            raise InputError(f"cannot be read: {exc}", path=self.path) from None
        return first.rstrip(b"\r\n")

    def _split(self, line: bytes, line_number: int) -> list[bytes]:
        if self.format == "csv":
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                                 path=self.path, line=line_number) from None
            return [field.encode("utf-8") for field in next(csv.reader([text]))]
        return line.split(b"\t")

    def _parquet_roles(self, columns: str) -> ColumnRoles:
        try:
            schema = pq.ParquetFile(self.path).schema_arrow
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"is not a readable Parquet file: {exc}", path=self.path) from None
        if columns != "auto":
            roles = ColumnRoles.parse(columns)
            if roles.width > len(schema.names):
                raise InputError(f"--columns names {roles.width} columns but the file has {len(schema.names)} "
                                 f"({', '.join(schema.names)})", path=self.path)
            return roles
        names = schema.names
        if "lhs" in names and "rhs" in names:
            return ColumnRoles(lhs=names.index("lhs"), rhs=names.index("rhs"),
                               rel=names.index("rel") if "rel" in names else None, width=len(names))
        if len(names) in (2, 3):
            return ColumnRoles.for_width(len(names), self.path)
        raise InputError(f"has columns {', '.join(names)}; name them lhs/rel/rhs or say which is which with "
                         "--columns", path=self.path)

    # ------------------------------------------------------------------ reading
    def __iter__(self) -> Iterator[EdgeBlock]:
        if self.format == "parquet":
            yield from self._iter_parquet()
        else:
            yield from self._iter_text()

    def _iter_text(self) -> Iterator[EdgeBlock]:
        """Read the file a block of whole lines at a time and parse each block with pyarrow.

        We cut the blocks ourselves (rather than use pyarrow's streaming reader, which reads
        dozens of blocks ahead) so memory stays a small multiple of the block size.
        """
        names = [f"c{i}" for i in range(self.roles.width)]
        wanted = [names[column] for _, column in self.roles.present()]
        parse_options = pacsv.ParseOptions(
            delimiter=self.delimiter,
            quote_char='"' if self.format == "csv" else False,
            double_quote=self.format == "csv",
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,
        )
        convert_options = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in wanted},
            include_columns=wanted,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        line = 1
        with open_binary(self.path) as stream:
            if self.header:
                stream.readline()
                line = 2
            for chunk in self._line_blocks(stream):
                read_options = pacsv.ReadOptions(block_size=len(chunk) + 1, column_names=names, use_threads=False)
                try:
                    table = pacsv.read_csv(pa.py_buffer(chunk), read_options=read_options,
                                           parse_options=parse_options, convert_options=convert_options)
                except pa.ArrowInvalid as exc:
                    self._locate_problem(line, str(exc))
                    raise  # not reached: _locate_problem always raises
                if table.num_rows == 0:
                    continue
                block = EdgeBlock({role: table.column(names[column]).combine_chunks()
                                   for role, column in self.roles.present()}, first_line=line)
                self._check_block(block)
                line += table.num_rows
                yield block
        if line == 1 + int(self.header):
            raise InputError("is empty (no edges)", path=self.path)

    def _line_blocks(self, stream: BinaryIO) -> Iterator[bytes]:
        """Blocks of about block_bytes that end at a line break (the last one may not)."""
        carry = b""
        while True:
            try:
                data = stream.read(self.block_bytes)
            except (EOFError, OSError) as exc:
                raise InputError(f"cannot be read to the end ({exc}); is the file truncated?",
                                 path=self.path) from None
            if not data:
                if carry:
                    yield carry
                return
            data = carry + data
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1 :]
            yield data[: cut + 1]

    def _iter_parquet(self) -> Iterator[EdgeBlock]:
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"is not a readable Parquet file: {exc}", path=self.path) from None
        if pf.metadata.num_rows == 0:
            raise InputError("is empty (no edges)", path=self.path)
        names = pf.schema_arrow.names
        present = self.roles.present()
        rows_per_batch = max(1024, self.block_bytes // 32)
        row = 1
        for batch in pf.iter_batches(batch_size=rows_per_batch, columns=[names[c] for _, c in present]):
            arrays = {}
            for role, column_index in present:
                name = names[column_index]
                column = batch.column(name)
                if column.null_count:
                    bad = int(pc.index(pc.is_null(column), True).as_py())
                    raise InputError("is empty (null)", path=self.path, line=row + bad,
                                     field=self.roles.name_of(column_index) + f" '{name}'", row_word="row")
                try:
                    arrays[role] = column.cast(pa.string())
                except pa.ArrowException as exc:
                    raise InputError(f"cannot be read as an id: {exc}", path=self.path, line=row,
                                     field=self.roles.name_of(column_index), row_word="row") from None
            block = EdgeBlock(arrays, first_line=row)
            self._check_block(block, newline_forbidden=True)
            row += batch.num_rows
            yield block

    def _check_block(self, block: EdgeBlock, newline_forbidden: bool = False) -> None:
        """Vectorised checks of a parsed block: no empty ids (and no newlines inside Parquet ids)."""
        for role, array in block.columns.items():
            column = getattr(self.roles, role)
            empty = pc.equal(pc.binary_length(array), 0)
            if pc.any(empty).as_py():
                bad = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
                raise InputError("is empty; every edge needs an lhs id, a relation and an rhs id",
                                 path=self.path, line=block.first_line + bad, field=self.roles.name_of(column),
                                 row_word=self.row_word)
            if newline_forbidden:
                has_newline = pc.match_substring(array, "\n")
                if pc.any(has_newline).as_py():
                    bad = int(np.flatnonzero(has_newline.to_numpy(zero_copy_only=False))[0])
                    raise InputError("contains a line break, which ids may not", path=self.path,
                                     line=block.first_line + bad, field=self.roles.name_of(column),
                                     row_word=self.row_word)

    # ------------------------------------------------------------------ errors
    def _locate_problem(self, start_line: int, arrow_message: str = "") -> None:
        """Scan the file line by line from `start_line` and raise an InputError for the first bad line."""
        try:
            self._scan_lines(start_line)
        except (EOFError, OSError, gzip.BadGzipFile) as exc:
            raise InputError(f"cannot be read to the end ({exc}); is the file truncated?", path=self.path) from None
        raise InputError(f"cannot be parsed: {arrow_message or 'unknown error'}", path=self.path, line=start_line)

    def _scan_lines(self, start_line: int) -> None:
        with open_binary(self.path) as f:
            stream = io.BufferedReader(f, buffer_size=1 << 20)  # type: ignore[type-var]
            for number, raw in enumerate(stream, start=1):
                if number < start_line:
                    continue
                line = raw[:-1] if raw.endswith(b"\n") else raw
                if line.endswith(b"\r"):
                    line = line[:-1]
                fields = self._split(line, number)
                if len(fields) != self.roles.width:
                    what = "an empty line" if not line else f"{len(fields)} field{'s' * (len(fields) != 1)}"
                    raise InputError(
                        f"has {what}; expected {self.roles.width} separated by "
                        f"{'tabs' if self.delimiter == chr(9) else 'commas'} ({','.join(self.roles.role_names())})",
                        path=self.path, line=number,
                    )
                for column, value in enumerate(fields):
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise InputError(
                            f"is not valid UTF-8 ({exc.reason}: byte 0x{value[exc.start]:02x} at offset {exc.start})",
                            path=self.path, line=number, field=self.roles.name_of(column),
                        ) from None
