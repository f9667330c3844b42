"""Streaming readers for edge files: delimited text (plain or compressed, local or remote, Matrix
Market included) and Parquet files or datasets, with pyarrow.

The text path parses a block of whole lines at a time with pyarrow's CSV parser, so memory stays
bounded by the block size; the layout (delimiter, comments, header, columns) comes from
`shardgraph.data.sniff`. Comment lines are cut out of the few blocks that have any; runs of
spaces and tabs are collapsed to one tab per block before parsing (`shardgraph.data.textblocks`). When pyarrow
rejects a block (a line with the wrong number of fields, bytes that are not UTF-8 ...), a slow
line-by-line scan from that block on finds the exact line and field, and raises an InputError
that names them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from shardgraph.data.columns import ColumnRoles
from shardgraph.data.files import Location, expand_glob, strip_compression_suffix
from shardgraph.data.sniff import (
    SAMPLE_BYTES,
    SPELLED,
    WHITESPACE,
    TextLayout,
    is_number,
    parse_delimiter,
    sniff,
    split_line,
)
from shardgraph.data.textblocks import collapse_blanks, drop_comments, drop_lines
from shardgraph.errors import InputError

__all__ = ["ColumnRoles", "EdgeBlock", "EdgeFileReader", "arrow_column", "check_block"]


@dataclass
class EdgeBlock:
    """A block of edges as arrow string arrays, with the line (or row) number of its first edge."""

    columns: dict[str, pa.Array]  # role -> array, for every role the file has
    first_line: int
    attributes: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) float32
    line_of_row: Callable[[int], int] | None = None  # where rows and lines do not advance together

    @property
    def lhs(self) -> pa.Array:
        return self.columns["lhs"]

    @property
    def rhs(self) -> pa.Array:
        return self.columns["rhs"]

    @property
    def rel(self) -> pa.Array | None:
        return self.columns.get("rel")

    def line(self, row: int) -> int:
        """The file line (or Parquet row) of the block's row `row`."""
        return self.line_of_row(row) if self.line_of_row is not None else self.first_line + row

    def __len__(self) -> int:
        return len(self.columns["lhs"])


def detect_format(location: Location) -> str:
    name = strip_compression_suffix(location.name).lower()
    if name.endswith((".parquet", ".pq")) or (not any(c in location.path for c in "*?[") and location.is_dir()):
        return "parquet"
    return "text"


class EdgeFileReader:
    """Reads one edge file (or Parquet dataset) block by block. Iterate to get EdgeBlocks.

    After iteration, `comment_lines` and `blank_lines` say how many lines were skipped, and
    `detected` what the layout detection decided. While it runs, `bytes_read` of `size_bytes`
    (on disk: compressed bytes of a compressed file; Parquet in proportion to the rows read)
    says how far it is.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        format: str = "auto",
        columns: str = "auto",
        header: bool | None = None,
        delimiter: str = "auto",
        comment: str = "#%",
        block_bytes: int = 16 << 20,
    ) -> None:
        self.location = Location.of(path)
        self.path = self.location.text
        self.block_bytes = block_bytes
        self.comment_lines = 0
        self.blank_lines = 0
        self.detected: dict[str, str] = {}
        self.locations = expand_glob(self.location)
        if len(self.locations) == 1 and not self.locations[0].exists():
            raise InputError("does not exist", path=self.path)
        self.bytes_read = 0
        self.format = detect_format(self.location) if format == "auto" else format
        if self.format == "parquet":
            self.row_word = "row"
            self.layout: TextLayout | None = None
            self._dataset = self._open_dataset()
            self.roles = self._parquet_roles(columns)
            fs = self.location.fs or pafs.LocalFileSystem()
            self.size_bytes = sum(int(i.size or 0) for i in fs.get_file_info(list(self._dataset.files)))
            return
        if len(self.locations) > 1:
            raise InputError(f"matches {len(self.locations)} files; give text files one by one (a glob or directory "
                             "is read as a Parquet dataset)", path=self.path)
        if self.location.is_dir():
            raise InputError("is a directory; only Parquet datasets are read from directories", path=self.path)
        self.size_bytes = self.location.size()
        if self.size_bytes == 0:
            raise InputError("is empty", path=self.path)
        self.row_word = "line"
        given = {"tsv": "\t", "csv": ","}.get(self.format)
        if delimiter != "auto":
            given = parse_delimiter(delimiter)
        self.layout = self._sniff(given, comment, header, columns)
        self.roles = self.layout.roles
        self.detected = dict(self.layout.detected)

    # ------------------------------------------------------------------ set-up
    def _sniff(self, delimiter: str | None, comment: str, header: bool | None, columns: str) -> TextLayout:
        try:
            with self.location.open() as f:
                head = f.read(SAMPLE_BYTES)
                at_eof = not f.read(1)
        except (OSError, EOFError) as exc:
            raise InputError(f"cannot be read: {exc}", path=self.path) from None
        suffix = Path(strip_compression_suffix(self.location.name)).suffix.lower()
        return sniff(head, at_eof, self.path, suffix=suffix, delimiter=delimiter, comments=comment, header=header,
                     columns=columns)

    def _open_dataset(self) -> pads.Dataset:
        fs = self.location.fs
        source: str | list[str] = [loc.path for loc in self.locations] if len(self.locations) > 1 or any(
            c in self.location.path for c in "*?[") else self.location.path
        try:
            return pads.dataset(source, format="parquet", partitioning="hive", filesystem=fs)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InputError(f"is not a readable Parquet file or dataset: {exc}", path=self.path) from None

    def _parquet_roles(self, columns: str) -> ColumnRoles:
        names = list(self._dataset.schema.names)
        if columns != "auto":
            if "=" in columns:
                return ColumnRoles.by_name(columns, names, self.path)
            roles = ColumnRoles.parse(columns)
            if roles.width > len(names):
                raise InputError(f"--columns names {roles.width} columns but the file has {len(names)} "
                                 f"({', '.join(names)})", path=self.path)
            return ColumnRoles(**{**roles.__dict__, "names": tuple(names[: roles.width])})
        named = ColumnRoles.from_names(names)
        if named is not None:
            self.detected["columns"] = f"{named.describe()} (from the column names)"
            return named
        if len(names) in (2, 3, 4):
            floating = sum(pa.types.is_floating(self._dataset.schema.field(n).type) for n in names[2:])
            roles = ColumnRoles.for_width(len(names), self.path, floating)
            self.detected["columns"] = f"{roles.describe()} (detected)"
            return ColumnRoles(**{**roles.__dict__, "names": tuple(names)})
        raise InputError(f"has columns {', '.join(names)}; name them lhs/rel/rhs or say which is which with "
                         "--columns (e.g. src=lhs,dst=rhs)", path=self.path)

    # ------------------------------------------------------------------ reading
    def __iter__(self) -> Iterator[EdgeBlock]:
        if self.format == "parquet":
            yield from self._iter_parquet()
        else:
            yield from self._iter_text()

    def _parse_options(self, delimiter: str) -> pacsv.ParseOptions:
        assert self.layout is not None
        return pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if self.layout.quoted else False,
                                  double_quote=self.layout.quoted, escape_char=False, newlines_in_values=False,
                                  ignore_empty_lines=True)

    def _iter_text(self) -> Iterator[EdgeBlock]:
        """Read the file a block of whole lines at a time and parse each block with pyarrow.

        We cut the blocks ourselves (rather than use pyarrow's streaming reader, which reads
        dozens of blocks ahead) so memory stays a small multiple of the block size.
        """
        layout = self.layout
        assert layout is not None
        names = [f"c{i}" for i in range(self.roles.width)]
        wanted = [names[column] for _, column in self.roles.present()]
        attributes = [(name, names[column]) for name, column in self.roles.attributes]
        column_types = {name: pa.string() for name in wanted} | {c: pa.float32() for _, c in attributes}
        convert_options = pacsv.ConvertOptions(column_types=column_types, include_columns=wanted + [
            c for _, c in attributes], strings_can_be_null=False, quoted_strings_can_be_null=False)
        collapse = layout.delimiter == WHITESPACE
        delimiter = "\t" if collapse else layout.delimiter
        parse_options = self._parse_options(delimiter)
        comment_bytes = [bytes([c]) for c in layout.comments]
        line = 1  # file line of the chunk's first line
        edges = 0
        to_skip = layout.skip_lines
        stream, raw_file = self.location.open_with_raw()
        with stream, raw_file:
            for raw in self._line_blocks(stream):
                self.bytes_read = min(self.size_bytes, raw_file.tell())
                chunk = raw
                if to_skip:
                    chunk, skipped = drop_lines(chunk, to_skip)
                    to_skip -= skipped
                    self._count_skipped(raw[: len(raw) - len(chunk)], comment_bytes)
                    line += skipped
                    if not chunk:
                        continue
                lines = chunk.count(b"\n") + (not chunk.endswith(b"\n"))
                data = chunk
                removed = 0
                if comment_bytes and any(chunk.startswith(c) or b"\n" + c in chunk for c in comment_bytes):
                    data, removed = drop_comments(chunk, comment_bytes)
                    self.comment_lines += removed
                if collapse:
                    data = collapse_blanks(data)
                table = self._parse(data, names, parse_options, convert_options, line)
                if table is None and not collapse and delimiter == " ":
                    # single spaces in the sample, runs of blanks here: collapse from now on
                    collapse, delimiter = True, "\t"
                    parse_options = self._parse_options(delimiter)
                    table = self._parse(collapse_blanks(data), names, parse_options, convert_options, line)
                if table is None:
                    self._locate_problem(line)
                    raise AssertionError("not reached: _locate_problem raises")
                self.blank_lines += lines - table.num_rows - removed
                if table.num_rows:
                    sparse = table.num_rows != lines
                    block = EdgeBlock(
                        {role: table.column(names[column]).combine_chunks() for role, column in self.roles.present()},
                        first_line=line,
                        attributes={name: table.column(c).to_numpy() for name, c in attributes},
                        line_of_row=self._line_map(chunk, line, comment_bytes) if sparse else None,
                    )
                    check_block(block, self.roles, self.path, self.row_word)
                    edges += table.num_rows
                    yield block
                line += lines
        if edges == 0:
            raise InputError("is empty (no edges)", path=self.path)
        self.bytes_read = self.size_bytes

    def _parse(self, data: bytes, names: list[str], parse_options: pacsv.ParseOptions,
               convert_options: pacsv.ConvertOptions, line: int) -> pa.Table | None:
        read_options = pacsv.ReadOptions(block_size=len(data) + 1, column_names=names, use_threads=False)
        try:
            return pacsv.read_csv(pa.py_buffer(data), read_options=read_options, parse_options=parse_options,
                                  convert_options=convert_options)
        except pa.ArrowInvalid:
            return None

    def _count_skipped(self, lines: bytes, comment_bytes: list[bytes]) -> None:
        """Count the comment and blank lines among the lines skipped before the first edge."""
        for raw in lines.split(b"\n")[: lines.count(b"\n")]:
            stripped = raw.strip()
            if not stripped:
                self.blank_lines += 1
            elif any(stripped.startswith(c) for c in comment_bytes):
                self.comment_lines += 1

    def _line_map(self, chunk: bytes, first_line: int, comment_bytes: list[bytes]) -> Callable[[int], int]:
        """row -> file line, for a block whose comment or blank lines were left out (built on first use)."""

        def line_of(row: int) -> int:
            lines = [i for i, raw in enumerate(chunk.split(b"\n"))
                     if raw.strip() and not any(raw.startswith(c) for c in comment_bytes)]
            return first_line + lines[row]

        return line_of

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
        names = list(self._dataset.schema.names)
        present = self.roles.present()
        needed = [names[c] for _, c in present] + [names[c] for _, c in self.roles.attributes]
        rows_per_batch = max(1024, self.block_bytes // 32)
        row = 1
        total_rows = max(1, self._dataset.count_rows())  # from the files' footers
        try:
            batches = self._dataset.to_batches(columns=needed, batch_size=rows_per_batch)
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                arrays = {role: arrow_column(batch, names[c], c, row, pa.string(), self.roles, self.path)
                          for role, c in present}
                attributes = {name: arrow_column(batch, names[c], c, row, pa.float32(), self.roles, self.path)
                              .to_numpy(zero_copy_only=False) for name, c in self.roles.attributes}
                block = EdgeBlock(arrays, first_line=row, attributes=attributes)
                check_block(block, self.roles, self.path, self.row_word, newline_forbidden=True)
                row += batch.num_rows
                self.bytes_read = min(self.size_bytes, self.size_bytes * (row - 1) // total_rows)
                yield block
        except (OSError, pa.ArrowIOError) as exc:
            raise InputError(f"cannot be read: {exc}", path=self.path) from None
        if row == 1:
            raise InputError("is empty (no edges)", path=self.path)

    # ------------------------------------------------------------------ errors
    def _locate_problem(self, start_line: int) -> None:
        """Scan the file line by line from `start_line` and raise an InputError for the first bad line."""
        try:
            self._scan_lines(start_line)
        except (EOFError, OSError) as exc:
            raise InputError(f"cannot be read to the end ({exc}); is the file truncated?", path=self.path) from None
        raise InputError("cannot be parsed", path=self.path, line=start_line)

    def _scan_lines(self, start_line: int) -> None:
        layout = self.layout
        assert layout is not None
        comments = tuple(bytes([c]) for c in layout.comments)
        spelled = SPELLED.get(layout.delimiter, repr(layout.delimiter))
        with self.location.open() as stream:
            for number, raw in enumerate(stream, start=1):
                if number < max(start_line, layout.skip_lines + 1):
                    continue
                line = raw.rstrip(b"\r\n")
                if not line.strip() or (comments and line.startswith(comments)):
                    continue
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    fields = split_line(line.decode("utf-8", "replace"), layout.delimiter)
                    column = next((i for i, f in enumerate(fields) if "\ufffd" in f), 0)
                    raise InputError(
                        f"is not valid UTF-8 ({exc.reason}: byte 0x{line[exc.start]:02x} at offset {exc.start})",
                        path=self.path, line=number, field=self.roles.name_of(column)) from None
                fields = split_line(text, layout.delimiter)
                if len(fields) != self.roles.width:
                    raise InputError(
                        f"has {len(fields)} field{'s' * (len(fields) != 1)}; expected {self.roles.width} separated "
                        f"by {spelled} ({self.roles.describe()})", path=self.path, line=number)
                for name, column in self.roles.attributes:
                    if not is_number(fields[column]):
                        raise InputError(f"is {fields[column]!r}, not a number (edge attribute {name!r})",
                                         path=self.path, line=number, field=self.roles.name_of(column))


def arrow_column(batch: pa.RecordBatch, name: str, index: int, row: int, type: pa.DataType, roles: ColumnRoles,
                 where: str) -> pa.Array:
    """Column `name` of a batch whose first row is row `row`, cast to `type` (string ids, float32
    attributes); nulls and values that do not convert stop with the row and field."""
    column = batch.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, pa.DictionaryArray):
        column = column.cast(column.type.value_type)  # hive partition keys arrive dictionary-encoded
    if column.null_count:
        bad = int(pc.index(pc.is_null(column), True).as_py())
        raise InputError("is empty (null)", path=where, line=row + bad, field=roles.name_of(index), row_word="row")
    try:
        return column.cast(type)
    except pa.ArrowException as exc:
        what = "an id" if type == pa.string() else "a number"
        raise InputError(f"cannot be read as {what}: {exc}", path=where, line=row, field=roles.name_of(index),
                         row_word="row") from None


def check_block(block: EdgeBlock, roles: ColumnRoles, where: str, row_word: str,
                newline_forbidden: bool = False) -> None:
    """Vectorised checks of a parsed block: no empty ids (and no line breaks inside ids read from
    Parquet or Python objects, which the dictionary files could not hold)."""
    for role, array in block.columns.items():
        column = getattr(roles, role)
        empty = pc.equal(pc.binary_length(array), 0)
        if pc.any(empty).as_py():
            bad = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
            raise InputError("is empty; every edge needs an lhs id, a relation and an rhs id", path=where,
                             line=block.line(bad), field=roles.name_of(column), row_word=row_word)
        if newline_forbidden:
            has_newline = pc.match_substring(array, "\n")
            if pc.any(has_newline).as_py():
                bad = int(np.flatnonzero(has_newline.to_numpy(zero_copy_only=False))[0])
                raise InputError("contains a line break, which ids may not", path=where, line=block.line(bad),
                                 field=roles.name_of(column), row_word=row_word)
