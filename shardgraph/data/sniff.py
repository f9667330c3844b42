"""Detect how a text edge file is laid out from its first lines: delimiter, comments, header, columns.

Detection never guesses silently: what it decided is listed in `TextLayout.detected` (shown in
the import summary), and when two delimiters both split every sampled line consistently in
different ways, it stops and asks for `--delimiter`. Matrix Market coordinate files are
recognised by their `%%MatrixMarket` banner.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field

from shardgraph.data.columns import ColumnRoles, role_of_name
from shardgraph.errors import InputError

SAMPLE_BYTES = 1 << 16
SAMPLE_LINES = 200
WHITESPACE = "whitespace"  # runs of spaces and tabs separate fields
# --delimiter names -> character (WHITESPACE: runs of blanks)
DELIMITER_NAMES = {"tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " ", WHITESPACE: WHITESPACE}
SPELLED = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe", " ": "space", WHITESPACE: "runs of spaces/tabs"}
CANDIDATES = ("\t", ",", ";", "|")
QUOTABLE = (",", ";", "|")  # CSV-style quoting ("a, b") is read for these delimiters
SUFFIX_DELIMITERS = {".tsv": "\t", ".tab": "\t", ".csv": ",", ".psv": "|", ".ssv": ";"}
DEFAULT_COMMENTS = "#%"
DELIMITER_HELP = "tab, comma, semicolon, pipe, space, whitespace or any one character"


@dataclass(frozen=True)
class TextLayout:
    """How to read a text edge file."""

    delimiter: str  # one character, or WHITESPACE
    quoted: bool  # fields may be quoted ("a, b")
    comments: bytes  # a line starting with any of these bytes is a comment
    skip_lines: int  # lines before the first edge (comments, blank lines, header, Matrix Market banner and size)
    header: tuple[str, ...] | None  # the header's names, where the file has one
    roles: ColumnRoles
    matrix_market: dict[str, object] | None = None  # banner fields and sizes of a Matrix Market file
    detected: dict[str, str] = field(default_factory=dict)  # what was detected, for the summary

    @property
    def width(self) -> int:
        return self.roles.width


def parse_delimiter(text: str) -> str:
    """--delimiter value -> one character or WHITESPACE."""
    if text in DELIMITER_NAMES:
        return DELIMITER_NAMES[text]
    unescaped = text.encode("utf-8").decode("unicode_escape") if "\\" in text else text
    if len(unescaped) != 1 or unescaped in "\r\n\"":
        raise InputError(f"--delimiter must be {DELIMITER_HELP}. Got {text!r} instead.")
    return unescaped


# ids and lines may be longer than the csv module's default field limit (128 KiB); pyarrow reads them
csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))


def split_line(line: str, delimiter: str) -> list[str]:
    if delimiter == WHITESPACE:
        return line.split()
    if delimiter in QUOTABLE:
        try:
            return next(csv.reader([line], delimiter=delimiter), [])
        except csv.Error:  # a malformed quote: the fields as they stand, for the message that follows
            return line.split(delimiter)
    return line.split(delimiter)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def looks_decimal(text: str) -> bool:
    return is_number(text) and any(c in text for c in ".eE")


def sniff(
    head: bytes,
    at_eof: bool,
    where: str,
    *,
    suffix: str = "",
    delimiter: str | None = None,
    comments: str | None = None,
    header: bool | None = None,
    columns: str = "auto",
) -> TextLayout:
    """Layout of a text edge file from its first bytes (`head`; `at_eof`: they are the whole file)."""
    lines = head.split(b"\n")
    if not at_eof and len(lines) > 1:
        lines.pop()  # a partial last line
    # bytes that are not UTF-8 are replaced here; the reader names their line and field
    text_lines = [line.rstrip(b"\r").decode("utf-8", "replace") for line in lines]
    if text_lines and text_lines[0].startswith("%%MatrixMarket"):
        return _matrix_market(text_lines, where, columns)
    comment_chars = DEFAULT_COMMENTS if comments is None else comments
    detected: dict[str, str] = {}

    def is_comment(line: str) -> bool:
        return bool(comment_chars) and line.lstrip()[:1] in comment_chars and line.lstrip()[:1] != ""

    first = next((i for i, line in enumerate(text_lines) if line.strip() and not is_comment(line)), None)
    if first is None:
        raise InputError("has no edges (only comments or blank lines)" if at_eof else
                         f"has no edges in its first {len(head):,} bytes (only comments or blank lines)", path=where)
    sample = [line for line in text_lines[first:] if line.strip() and not is_comment(line)][:SAMPLE_LINES]
    if first:
        detected["leading_lines"] = f"{first} comment or blank line(s) skipped"

    if delimiter is None:
        delimiter = _detect_delimiter(sample, suffix, where)
        detected["delimiter"] = f"{SPELLED.get(delimiter, repr(delimiter))} (detected)"
    else:
        detected["delimiter"] = f"{SPELLED.get(delimiter, repr(delimiter))} (given)"
    rows = [split_line(line, delimiter) for line in sample]
    by_name = columns != "auto" and "=" in columns
    names: tuple[str, ...] | None = None
    if header is None:
        header, reason = _detect_header(rows, columns if by_name else "")
        if header:
            detected["header"] = f"{','.join(rows[0])} (detected: {reason})"
    elif header:
        detected["header"] = f"{','.join(rows[0])} (given)"
    if header:
        names = tuple(field.strip() for field in rows[0])
        rows = rows[1:]
        first += 1
        if not rows and not at_eof:
            raise InputError("has a header but no edge in its first lines", path=where)
    width = len(rows[0]) if rows else len(names or ())
    if columns != "auto":
        if by_name:
            if names is None:
                wanted = [item.partition("=")[0].strip() for item in columns.split(",")]
                missing = [name for name in wanted if name not in rows[0]]
                raise InputError(f"--columns names columns by header name, but {', '.join(map(repr, missing))} "
                                 f"{'is' if len(missing) == 1 else 'are'} not in the header "
                                 f"({','.join(rows[0])})", path=where)
            roles = ColumnRoles.by_name(columns, names, where)
        else:
            roles = ColumnRoles.parse(columns)
        detected["columns"] = f"{roles.describe()} (given)"
    else:
        named = ColumnRoles.from_names(names) if names else None
        if named is not None:
            roles = named
            detected["columns"] = f"{roles.describe()} (from the header)"
        else:
            roles = ColumnRoles.for_width(width, where, _numeric_tail(rows, width))
            if roles.attributes or width > 2:
                detected["columns"] = f"{roles.describe()} (detected)"
    if names is not None:
        roles = ColumnRoles(**{**roles.__dict__, "names": names})
    return TextLayout(delimiter=delimiter, quoted=delimiter in QUOTABLE, comments=comment_chars.encode("utf-8"),
                      skip_lines=first, header=names, roles=roles, detected=detected)


def _agreement(lines: Sequence[str], delimiter: str) -> tuple[float, int]:
    """(fraction of lines with the most common number of fields, that number) under a delimiter."""
    counts: dict[int, int] = {}
    for line in lines:
        width = len(split_line(line, delimiter))
        counts[width] = counts.get(width, 0) + 1
    width = max(counts, key=lambda w: counts[w])
    return counts[width] / len(lines), width


def _detect_delimiter(sample: list[str], suffix: str, where: str) -> str:
    """The delimiter that splits the sampled lines into the same number (>= 2) of fields: every
    line, or else most of them (the reader then names the line that does not fit)."""
    scores: dict[str, tuple[float, int]] = {}
    for candidate in CANDIDATES:
        scores[candidate] = _agreement(sample, candidate)
    fraction, width = _agreement(sample, WHITESPACE)
    single_spaces = all(" ".join(line.split()) == line for line in sample)
    scores[" " if single_spaces else WHITESPACE] = (fraction, width)
    scores = {d: (f, w) for d, (f, w) in scores.items() if w >= 2}
    if "\t" in scores and scores["\t"][0] == 1.0:
        padded = any(field != field.strip() for line in sample for field in line.split("\t"))
        if padded and scores.get(WHITESPACE, (0.0, 0)) == (1.0, scores["\t"][1]):
            scores.pop("\t")  # tabs padded with spaces: the blanks around them are not part of the ids
        else:
            # tabs split every line: fields may hold spaces ("New York"), so blanks do not compete
            scores.pop(" ", None)
            scores.pop(WHITESPACE, None)
    for threshold in (1.0, 0.5):
        best = max((f for f, _ in scores.values()), default=0.0)
        if best < threshold:
            continue
        tied = [d for d, (f, _) in scores.items() if f == best]
        if len(tied) == 1:
            return tied[0]
        hinted = SUFFIX_DELIMITERS.get(suffix)
        if hinted in tied:
            return hinted
        options = "; ".join(f"{SPELLED[d]}: {scores[d][1]} fields" for d in tied)
        raise InputError(f"could be split more than one way ({options}); say which with --delimiter "
                         f"({DELIMITER_HELP})", path=where)
    raise InputError("has lines that no delimiter (tab, comma, semicolon, |, spaces) splits into the same number "
                     f"of fields; say which with --delimiter ({DELIMITER_HELP}) and check the file", path=where)


def _detect_header(rows: list[list[str]], by_name: str) -> tuple[bool, str]:
    """Whether the first row is a header, and why."""
    first = [field.strip() for field in rows[0]]
    if by_name:
        wanted = [item.partition("=")[0].strip() for item in by_name.split(",")]
        return all(name in first for name in wanted), "it has the names given to --columns"
    if all(role_of_name(field) for field in first):
        return True, "column names"
    rest = rows[1:]
    if rest and all(len(row) == len(first) for row in rest):
        numeric = [all(is_number(row[c]) for row in rest) for c in range(len(first))]
        if any(numeric) and all(not is_number(first[c]) for c in range(len(first)) if numeric[c]):
            return True, "names above numbers"
    return False, ""


def _numeric_tail(rows: list[list[str]], width: int) -> int:
    """How many of the last columns (of a 3- or 4-column file) look like attributes: 3 columns, a
    third with decimals in every line (a weight); 4 columns, the last two numbers."""
    if not rows:
        return 0
    if width == 3:
        return int(all(len(r) == 3 and looks_decimal(r[2]) for r in rows))
    if width == 4:
        return 2 * int(all(len(r) == 4 and is_number(r[2]) and is_number(r[3]) for r in rows))
    return 0


def _matrix_market(lines: list[str], where: str, columns: str) -> TextLayout:
    """A Matrix Market coordinate file: banner, % comments, a size line 'rows cols entries', then
    'i j [value]' lines with 1-based indices."""
    banner = lines[0].split()
    if len(banner) < 5 or banner[1].lower() != "matrix" or banner[2].lower() != "coordinate":
        raise InputError(f"is a Matrix Market file of kind {' '.join(banner[1:3])!r}; only 'matrix coordinate' "
                         "(sparse) files hold edges", path=where, line=1)
    value_field, symmetry = banner[3].lower(), banner[4].lower()
    if value_field not in ("real", "integer", "pattern", "double"):
        raise InputError(f"is a Matrix Market file of {value_field} values; edges need real, integer or pattern",
                         path=where, line=1)
    number = 1
    while number < len(lines) and (not lines[number].strip() or lines[number].lstrip().startswith("%")):
        number += 1
    if number >= len(lines):
        raise InputError("is a Matrix Market file without its size line", path=where)
    size = lines[number].split()
    if len(size) != 3 or not all(s.isdigit() for s in size):
        raise InputError(f"has {lines[number]!r} where the Matrix Market size line 'rows columns entries' should be",
                         path=where, line=number + 1)
    width = 2 if value_field == "pattern" else 3
    if columns != "auto":
        roles = ColumnRoles.parse(columns)
    elif width == 2:
        roles = ColumnRoles(lhs=0, rhs=1, rel=None, width=2)
    else:
        roles = ColumnRoles(lhs=0, rhs=1, rel=None, width=3, attributes=(("weight", 2),))
    sample = [line for line in lines[number + 1 :] if line.strip() and not line.startswith("%")][:SAMPLE_LINES]
    single = all(" ".join(line.split()) == line for line in sample)
    rows, cols, entries = (int(s) for s in size)
    info: dict[str, object] = {"rows": rows, "columns": cols, "entries": entries, "field": value_field,
                               "symmetry": symmetry}
    detected = {"format": f"Matrix Market coordinate {value_field} {symmetry}, {rows:,} x {cols:,}, "
                          f"{entries:,} entries (1-based ids kept as written)",
                "columns": roles.describe()}
    return TextLayout(delimiter=" " if single else WHITESPACE, quoted=False, comments=b"%", skip_lines=number + 1,
                      header=None, roles=roles, matrix_market=info, detected=detected)
