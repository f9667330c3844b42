"""Fuzzed bad input (issue 18, part 1): edge files, node tables, Parquet files and configs.

Every generated input either imports (and the dataset then verifies and reads back) or fails
with a ShardgraphError: for files an InputError naming the file (and, where there is one, the
line and field), for configs a ConfigError naming the key path. Anything else is a bug, and so
is any output or temporary file left behind by a failure.

Seeded (derandomised) and bounded: SHARDGRAPH_FUZZ_EXAMPLES examples per format (default 25,
a few seconds each format under `make test`); the full campaign (tests/faults/campaign.py)
raises it and collects the outcome classes through SHARDGRAPH_FUZZ_REPORT.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardgraph.config import default_config, load_config
from shardgraph.data.dataset import Dataset
from shardgraph.data.importer import import_edges
from shardgraph.data.nodes import import_graph
from shardgraph.errors import ConfigError, InputError, ShardgraphError
from tests.conftest import REPO

EXAMPLES = int(os.environ.get("SHARDGRAPH_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)
OUTCOMES: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
SAMPLES: dict[str, dict[str, list[str]]] = collections.defaultdict(lambda: collections.defaultdict(list))


def record(kind: str, outcome: str, message: str = "", directory: Path | None = None) -> None:
    """Count an outcome; keep a few of its messages (temporary directory cut out) for the report."""
    OUTCOMES[kind][outcome] += 1
    if message:
        if directory is not None:
            message = message.replace(str(directory) + "/", "")
        reason = message.split(": ", 1)[-1][:60]
        kept = SAMPLES[kind][outcome]
        if len(kept) < 6 and all(m.split(": ", 1)[-1][:60] != reason for m in kept):
            kept.append(message[:240])


@pytest.fixture(scope="module", autouse=True)
def report_outcomes() -> Iterator[None]:
    yield
    target = os.environ.get("SHARDGRAPH_FUZZ_REPORT")
    if target:
        Path(target).write_text(json.dumps({"outcomes": {k: dict(v) for k, v in OUTCOMES.items()},
                                            "samples": SAMPLES}, indent=1))


def attempt(kind: str, directory: Path, run: Any, inputs: set[str]) -> Dataset | None:
    """Run one import; classify its outcome; check that a failure is a named error and left nothing."""
    try:
        run()
    except InputError as exc:
        assert exc.path is not None, f"an InputError that names no file: {exc}"
        assert str(exc).startswith(exc.path), str(exc)
        where = "file:line:field" if exc.line is not None and exc.field is not None else \
            "file:line" if exc.line is not None else "file"
        record(kind, f"refused, naming {where}", str(exc), directory)
    except ShardgraphError as exc:
        record(kind, "refused, other named error", str(exc), directory)
        assert "Traceback" not in str(exc)
    else:
        record(kind, "imported")
        dataset = Dataset(directory / "out")
        dataset.verify()
        return dataset
    assert sorted(p.name for p in directory.iterdir()) == sorted(inputs), "a failed import left files behind"
    return None


# ----------------------------------------------------------------------------- edge files

ids = st.one_of(
    st.text(alphabet="abcxyzé中0123456789_-.:/", min_size=1, max_size=8),
    st.sampled_from(["1", "2.5", "-3", "1e9", "nan", "true", "null", "NA", "#x", "%y"]),  # numbers and lookalikes
    st.builds(lambda n: "w" * n, st.integers(1000, 70_000)),  # very long ids
)
fields_of_a_bad_line = st.one_of(
    st.lists(ids, min_size=1, max_size=5),  # wrong column counts
    st.tuples(st.just(""), ids, ids).map(list),  # empty id
    st.tuples(ids, st.just("r"), st.just("")).map(list),
    st.tuples(st.just('"a\tb"'), st.just("r"), st.just('"c,d"')).map(list),  # quoted fields holding delimiters
    st.tuples(st.just('"unterminated'), ids, ids).map(list),
)


@st.composite
def edge_files(draw: st.DrawFn) -> tuple[str, bytes, int]:
    delimiter = draw(st.sampled_from(["\t", ",", " "]))
    width = draw(st.sampled_from([2, 3]))
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["good"] * 6 + ["bad", "bytes", "nul", "long"]))
        if kind == "good":
            parts = [draw(ids) for _ in range(width)]
            lines.append(delimiter.join(parts).encode())
        elif kind == "bad":
            lines.append(delimiter.join(draw(fields_of_a_bad_line)).encode())
        elif kind == "bytes":
            lines.append(draw(st.binary(min_size=1, max_size=40)))
        elif kind == "nul":
            lines.append(b"a\x00b" + delimiter.encode() + b"r" + delimiter.encode() + b"\x00")
        else:
            lines.append(delimiter.join(["x" * 200_000, "r", "y"][:width]).encode())
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = newline.join(lines) + (newline if lines and draw(st.booleans()) else b"")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data  # a UTF-8 byte order mark
    suffix = {"\t": ".tsv", ",": ".csv", " ": ".txt"}[delimiter]
    line_count = data.count(b"\n") + 1
    if draw(st.integers(0, 4)) == 0:
        data = gzip.compress(data)
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, max(0, len(data) - 1)))]  # a gzip file cut short
        suffix += ".gz"
    return suffix, data, line_count


@FUZZ
@given(edge_files(), st.sampled_from([1, 2]))
def test_fuzzed_edge_files(file: tuple[str, bytes, int], partitions: int) -> None:
    suffix, data, line_count = file
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        path = directory / f"edges{suffix}"
        path.write_bytes(data)
        dataset = attempt("edge files", directory, lambda: import_edges([path], directory / "out",
                                                                        partitions=partitions, progress=False),
                          {path.name})
        if dataset is not None:
            assert dataset.edge_count("train") <= line_count
            for name, spec in dataset.entity_types.items():
                names = dataset.all_entity_names(name)
                assert len(names) == spec.count and all(names), "an imported id is empty"


# ----------------------------------------------------------------------------- Parquet

ARROW_COLUMNS = {
    "string": st.lists(st.one_of(st.none(), st.text(max_size=6)), min_size=1, max_size=8).map(
        lambda v: pa.array(v, pa.string())),
    "int64": st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=8).map(
        lambda v: pa.array(v, pa.int64())),
    "float64": st.lists(st.floats(allow_nan=True), min_size=1, max_size=8).map(lambda v: pa.array(v, pa.float64())),
    "bool": st.lists(st.booleans(), min_size=1, max_size=8).map(lambda v: pa.array(v, pa.bool_())),
    "binary": st.lists(st.binary(max_size=6), min_size=1, max_size=8).map(lambda v: pa.array(v, pa.binary())),
    "list": st.lists(st.lists(st.integers(0, 9), max_size=3), min_size=1, max_size=8).map(
        lambda v: pa.array(v, pa.list_(pa.int64()))),
}


@st.composite
def parquet_files(draw: st.DrawFn) -> bytes:
    names = draw(st.sampled_from([["lhs", "rel", "rhs"], ["src", "dst"], ["lhs", "rhs", "weight"], ["a"]]))
    columns = [draw(st.sampled_from(list(ARROW_COLUMNS)).flatmap(lambda kind: ARROW_COLUMNS[kind]))
               for _ in names]
    length = min(len(c) for c in columns)
    table = pa.table({name: column.slice(0, length) for name, column in zip(names, columns, strict=True)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    if draw(st.integers(0, 5)) == 0:
        data = data[: draw(st.integers(0, len(data) - 1))]  # cut short
    return data


@FUZZ
@given(parquet_files())
def test_fuzzed_parquet_files(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        path = directory / "edges.parquet"
        path.write_bytes(data)
        attempt("Parquet files", directory, lambda: import_edges([path], directory / "out", progress=False),
                {path.name})


# ----------------------------------------------------------------------------- node tables

NODES_CONFIG = """
[nodes.features.name]
encoder = "hash"
n_features = 16
[nodes.features.size]
encoder = "numeric"
[nodes.features.tags]
encoder = "multi_hot"
n_features = 10
"""
cells = st.one_of(ids, st.just(""), st.sampled_from(["1", "2 3", "12", "-1", "1.5e3", "x y", '"a,b"', "inf"]))


@st.composite
def node_tables(draw: st.DrawFn) -> bytes:
    header = draw(st.sampled_from([["id", "name", "size", "tags"], ["id", "name", "tags"], ["name", "id", "size",
                                   "tags"], ["id", "name", "size", "tags", "extra"]]))
    rows = [",".join(header)]
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 9)) == 0:
            rows.append(draw(st.binary(max_size=30)).decode("latin1"))
            continue
        row = [draw(st.sampled_from(["n0", "n1", "n2", "n3", "new"])) if column == "id" else draw(cells)
               for column in header]
        if draw(st.integers(0, 9)) == 0:
            row = row[: draw(st.integers(0, len(row)))]  # wrong column count
        rows.append(",".join(row))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    data = newline.join(rows).encode("utf-8", "surrogateescape") + newline.encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


@FUZZ
@given(node_tables())
def test_fuzzed_node_tables(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        (directory / "edges.tsv").write_text("n0\tn1\nn1\tn2\nn2\tn3\n")
        (directory / "nodes.csv").write_bytes(data)
        (directory / "c.toml").write_text(NODES_CONFIG)
        attempt("node tables", directory,
                lambda: import_graph([directory / "edges.tsv"], directory / "out", nodes=[directory / "nodes.csv"],
                                     config=directory / "c.toml", progress=False),
                {"edges.tsv", "nodes.csv", "c.toml"})


# ----------------------------------------------------------------------------- configs


def _key_paths(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _key_paths(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


KNOWN_KEYS = [k for k in _key_paths(default_config().to_dict()) if k]
UNKNOWN_KEYS = ["training.lrr", "nosuch.key", "model.operatr", "training", "model.dimension.x", "walks.p.q"]
values = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: "nan" if math.isnan(f) else
                                                     "inf" if f == math.inf else "-inf" if f == -math.inf else repr(f)),
    st.sampled_from(["true", "false", '"none"', '"translation"', '"no_such_operator"', '"dot"', '"cos"', '[]',
                     "[1, 2]", '["a"]', "{}", '"', "'x'", "", "=", '"x"', "0", "-1", "1e400"]),
    st.text(max_size=10),
)


@FUZZ
@given(st.lists(st.tuples(st.one_of(st.sampled_from(KNOWN_KEYS), st.sampled_from(UNKNOWN_KEYS)), values),
                min_size=1, max_size=3))
def test_fuzzed_config_overrides(overrides: list[tuple[str, str]]) -> None:
    try:
        load_config(None, [f"{key}={value}" for key, value in overrides])
    except ConfigError as exc:
        named = any(key in str(exc) or key.split(".")[0] in str(exc) for key, _ in overrides)
        assert named, f"the message names no key of {overrides}: {exc}"
        record("configs (-p overrides)", "refused, naming the key path", str(exc))
    else:
        record("configs (-p overrides)", "accepted")


@FUZZ
@given(st.lists(st.tuples(st.one_of(st.sampled_from(KNOWN_KEYS), st.sampled_from(UNKNOWN_KEYS)), values),
                min_size=1, max_size=3), st.binary(max_size=20))
def test_fuzzed_config_files(entries: list[tuple[str, str]], noise: bytes) -> None:
    sections: dict[str, list[str]] = collections.defaultdict(list)
    for key, value in entries:
        section, _, name = key.rpartition(".")
        sections[section].append(f"{name} = {value}")
    text = "".join((f"[{s}]\n" if s else "") + "\n".join(lines) + "\n" for s, lines in sections.items())
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / "c.toml"
        path.write_bytes(text.encode() + noise)
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path)), f"the message names no file: {exc}"
            record("configs (TOML files)", "refused, naming file and key path", str(exc), Path(temp))
        else:
            record("configs (TOML files)", "accepted")


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("case", ["bad field count", "truncated gzip", "unknown operator", "bad value type"])
def test_cli_reports_bad_input_without_a_traceback(tmp_path: Path, case: str) -> None:
    """What a user sees: one line naming the place, exit status 2, no traceback, no output."""
    edges = tmp_path / "e.tsv"
    edges.write_text("a\tr\tb\nb\tr\n")
    args = ["import", str(edges), "--out", str(tmp_path / "out")]
    expect = r"e.tsv, line 2"
    if case == "truncated gzip":
        edges.unlink()
        edges = tmp_path / "e.tsv.gz"
        edges.write_bytes(gzip.compress(b"a\tr\tb\n" * 1000)[:-30])
        args = ["import", str(edges), "--out", str(tmp_path / "out")]
        expect = "e.tsv.gz"
    elif case == "unknown operator":
        edges.write_text("a\tr\tb\n")
        args += ["-p", "model.operator=\"quaternion\""]
        expect = "model.operator"
    elif case == "bad value type":
        edges.write_text("a\tr\tb\n")
        args += ["-p", "training.lr=\"fast\""]
        expect = "training.lr"
    proc = subprocess.run([sys.executable, "-m", "shardgraph", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expect in proc.stderr and proc.stderr.startswith("shardgraph import: error: "), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [edges.name]
