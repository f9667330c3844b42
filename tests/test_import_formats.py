"""Edge files as they come: delimiters, comments, headers, quoting, Matrix Market, edge attributes,
compression, Parquet datasets, remote paths. Counts are checked against the files' own lines."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardgraph.cli import main
from shardgraph.data.dataset import Dataset
from shardgraph.data.importer import import_edges
from shardgraph.data.textblocks import collapse_blanks, collapse_blanks_numpy
from shardgraph.errors import InputError
from tests.conftest import DATA, require_kernels

FORMATS = DATA / "formats"


def edges_of(dataset: Path) -> set[tuple[str, str, str]]:
    """(lhs, relation, rhs) names of every train edge of a dataset."""
    ds = Dataset(dataset)
    (name,) = ds.entity_types
    names = ds.all_entity_names(name)
    relations = [r.name for r in ds.relations]
    return {(names[a], relations[r], names[b]) for a, r, b in ds.global_edges("train").tolist()}


def run_import(*args: str) -> int:
    return main(["import", *args, "--no-progress"])


# ----------------------------------------------------------------------------- the three reported failures


def test_space_separated_edge_list(tmp_path: Path) -> None:
    (tmp_path / "g.txt").write_text("1 2\n2 3\n")
    assert run_import(str(tmp_path / "g.txt"), "--out", str(tmp_path / "d")) == 0
    ds = Dataset(tmp_path / "d")
    assert ds.summary()["entities"] == 3 and ds.edge_count("train") == 2
    assert edges_of(tmp_path / "d") == {("1", "edge", "2"), ("2", "edge", "3")}


def test_comment_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    text = "# a graph\n% from KONECT\n\n1\t2\n# in the middle\n\n2\t3\n"
    (tmp_path / "g.txt").write_text(text)
    summary = import_edges([tmp_path / "g.txt"], tmp_path / "d", progress=False)
    lines = text.split("\n")[:-1]
    assert summary.comment_lines == sum(line.startswith(("#", "%")) for line in lines) == 3
    assert summary.blank_lines == sum(not line for line in lines) == 2
    assert summary.entities == 3 and summary.edges["train"] == 2
    assert edges_of(tmp_path / "d") == {("1", "edge", "2"), ("2", "edge", "3")}


def test_csv_header_is_not_an_edge(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("src,dst\na,b\nb,c\n")
    assert run_import(str(tmp_path / "g.csv"), "--out", str(tmp_path / "d")) == 0
    ds = Dataset(tmp_path / "d")
    assert ds.summary()["entities"] == 3 and ds.edge_count("train") == 2
    assert edges_of(tmp_path / "d") == {("a", "edge", "b"), ("b", "edge", "c")}


# ----------------------------------------------------------------------------- delimiters


@pytest.mark.parametrize("delimiter", ["\t", ",", ";", "|", " ", "  \t "])
def test_every_delimiter_gives_the_same_graph(tmp_path: Path, delimiter: str) -> None:
    edges = [("a", "r", "b"), ("b", "s", "c"), ("c", "r", "a"), ("d", "s", "a")]
    path = tmp_path / "g.txt"
    path.write_text("".join(delimiter.join(e) + "\n" for e in edges))
    summary = import_edges([path], tmp_path / "d", progress=False)
    assert summary.entities == 4 and summary.relations == 2
    assert edges_of(tmp_path / "d") == set(edges)


def test_runs_of_blanks_leading_and_trailing(tmp_path: Path) -> None:
    summary = import_edges([FORMATS / "aligned.txt"], tmp_path / "d", progress=False)
    rows = [line.split() for line in (FORMATS / "aligned.txt").read_text().splitlines()]
    assert summary.edges["train"] == len(rows)
    assert summary.entities == len({x for row in rows for x in row})
    assert edges_of(tmp_path / "d") == {(a, "edge", b) for a, b in rows}


def test_single_spaces_then_runs_later_in_the_file(tmp_path: Path) -> None:
    lines = [f"{i} {i + 1}" for i in range(5000)] + ["7   9", "  8 9  "]
    (tmp_path / "g.txt").write_text("\n".join(lines) + "\n")
    summary = import_edges([tmp_path / "g.txt"], tmp_path / "d", progress=False)
    assert summary.edges["train"] == len(lines)
    assert ("7", "edge", "9") in edges_of(tmp_path / "d") and ("8", "edge", "9") in edges_of(tmp_path / "d")


@pytest.mark.parametrize("collapse", [collapse_blanks, collapse_blanks_numpy])
def test_collapse_blanks_matches_split(collapse: object) -> None:
    if collapse is collapse_blanks:
        require_kernels()  # the C loop, not the numpy fallback
    text = b"  a \t b  c\t\n\t\nd  e \r\nf\tg   \n \n"
    expected = b"\n".join(b"\t".join(line.rstrip(b"\r").split()) + b"\r" * line.endswith(b"\r")
                           for line in text.split(b"\n"))
    assert collapse(text) == expected  # type: ignore[operator]


@pytest.mark.parametrize("name,delimiter", [("semicolon.txt", ";"), ("pipe.txt", "|")])
def test_semicolon_and_pipe_files(tmp_path: Path, name: str, delimiter: str) -> None:
    rows = [line.split(delimiter) for line in (FORMATS / name).read_text().splitlines()]
    summary = import_edges([FORMATS / name], tmp_path / "d", progress=False)
    assert summary.edges["train"] == len(rows)
    assert summary.entities == len({row[0] for row in rows} | {row[-1] for row in rows})
    assert summary.detected[str(FORMATS / name)]["delimiter"].endswith("(detected)")


def test_quoted_fields_with_delimiters_inside(tmp_path: Path) -> None:
    summary = import_edges([FORMATS / "quoted.csv"], tmp_path / "d", progress=False)
    assert summary.edges["train"] == 3 and summary.entities == 3 and summary.relations == 2
    assert edges_of(tmp_path / "d") == {("Smith, John", "knows", "Doe, Jane"), ("Doe, Jane", "knows", "Bob"),
                                        ("Bob", "likes, a lot", "Smith, John")}


def test_ambiguous_delimiter_asks_for_the_flag(tmp_path: Path) -> None:
    (tmp_path / "g.txt").write_text("a,b c\nd,e f\n")
    with pytest.raises(InputError, match="--delimiter"):
        import_edges([tmp_path / "g.txt"], tmp_path / "d", progress=False)
    summary = import_edges([tmp_path / "g.txt"], tmp_path / "d", delimiter="comma", progress=False)
    assert edges_of(tmp_path / "d") == {("a", "edge", "b c"), ("d", "edge", "e f")}
    assert summary.detected[str(tmp_path / "g.txt")]["delimiter"] == "comma (given)"


def test_suffix_breaks_a_tie(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("a;x,b\nc;y,d\n")  # ';' and ',' both split every line in two
    summary = import_edges([tmp_path / "g.csv"], tmp_path / "d", progress=False)
    assert edges_of(tmp_path / "d") == {("a;x", "edge", "b"), ("c;y", "edge", "d")}
    assert summary.detected[str(tmp_path / "g.csv")]["delimiter"] == "comma (detected)"


def test_bad_line_after_detection_is_named(tmp_path: Path) -> None:
    (tmp_path / "g.txt").write_text("a b\nb c\n# note\nc\n")
    with pytest.raises(InputError, match=r"g.txt, line 4: has 1 field"):
        import_edges([tmp_path / "g.txt"], tmp_path / "d", progress=False)


def test_comment_option(tmp_path: Path) -> None:
    (tmp_path / "g.txt").write_text("#a #b\n#b #c\n")
    with pytest.raises(InputError, match="no edges"):
        import_edges([tmp_path / "g.txt"], tmp_path / "d", progress=False)
    summary = import_edges([tmp_path / "g.txt"], tmp_path / "d", comment="", progress=False)
    assert summary.entities == 3 and summary.edges["train"] == 2


# ----------------------------------------------------------------------------- headers and columns


def test_snap_file(tmp_path: Path) -> None:
    summary = import_edges([FORMATS / "snap.txt"], tmp_path / "d", progress=False)
    data = [line.split("\t") for line in (FORMATS / "snap.txt").read_text().splitlines() if not line.startswith("#")]
    assert summary.edges["train"] == len(data) == 5 and summary.entities == 4 and summary.comment_lines == 4


def test_header_detected_from_names_above_numbers(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("node_a,node_b\n0,1\n1,2\n")
    summary = import_edges([tmp_path / "g.csv"], tmp_path / "d", progress=False)
    assert summary.entities == 3 and summary.edges["train"] == 2


def test_header_flags(tmp_path: Path) -> None:
    (tmp_path / "g.tsv").write_text("x\ty\na\tb\n")
    summary = import_edges([tmp_path / "g.tsv"], tmp_path / "d", progress=False)
    assert summary.edges["train"] == 2  # no sign of a header: x y stays an edge
    assert main(["import", str(tmp_path / "g.tsv"), "--out", str(tmp_path / "e"), "--header", "--no-progress"]) == 0
    assert Dataset(tmp_path / "e").edge_count("train") == 1
    (tmp_path / "h.csv").write_text("src,dst\na,b\n")
    assert main(["import", str(tmp_path / "h.csv"), "--out", str(tmp_path / "f"), "--no-header",
                 "--no-progress"]) == 0
    assert Dataset(tmp_path / "f").edge_count("train") == 2


def test_columns_by_name(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("type,dst,src,note\nlikes,b,a,x\nhates,c,b,y\n")
    assert run_import(str(tmp_path / "g.csv"), "--out", str(tmp_path / "d"), "--columns",
                      "src=lhs,dst=rhs,type=rel") == 0
    assert edges_of(tmp_path / "d") == {("a", "likes", "b"), ("b", "hates", "c")}
    with pytest.raises(InputError, match="not in the header"):
        import_edges([tmp_path / "g.csv"], tmp_path / "e", columns="from=lhs,dst=rhs", progress=False)


def test_header_names_choose_the_roles(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("target,source,weight\nb,a,0.5\nc,b,2\n")
    import_edges([tmp_path / "g.csv"], tmp_path / "d", progress=False)
    assert edges_of(tmp_path / "d") == {("a", "edge", "b"), ("b", "edge", "c")}
    ds = Dataset(tmp_path / "d")
    assert ds.edge_attributes == ("weight",)
    assert sorted(ds.bucket_attribute("train", 0, 0, "weight").tolist()) == [0.5, 2.0]


# ----------------------------------------------------------------------------- Matrix Market and attributes


def test_matrix_market_weighted(tmp_path: Path) -> None:
    summary = import_edges([FORMATS / "weighted.mtx"], tmp_path / "d", progress=False)
    entries = [line.split() for line in (FORMATS / "weighted.mtx").read_text().splitlines()[4:]]
    assert summary.edges["train"] == len(entries) == 5 and summary.entities == 4
    assert summary.edge_attributes == ["weight"]
    ds = Dataset(tmp_path / "d")
    names = ds.all_entity_names("entity")
    edges = ds.bucket_edges("train", 0, 0)
    weights = ds.bucket_attribute("train", 0, 0, "weight")
    got = {(names[a], names[b]): float(w) for (a, _, b), w in zip(edges.tolist(), weights.tolist(), strict=True)}
    assert got == {(i, j): float(w) for i, j, w in entries}
    ds.verify()


def test_matrix_market_pattern(tmp_path: Path) -> None:
    summary = import_edges([FORMATS / "pattern.mtx"], tmp_path / "d", progress=False)
    assert summary.edges["train"] == 3 and summary.entities == 3 and summary.edge_attributes == []


def test_weight_and_timestamp_columns_and_skipping(tmp_path: Path) -> None:
    rows = [line.split() for line in (FORMATS / "konect.txt").read_text().splitlines() if not line.startswith("%")]
    import_edges([FORMATS / "konect.txt"], tmp_path / "d", partitions=2, progress=False)
    ds = Dataset(tmp_path / "d")
    assert ds.edge_attributes == ("weight", "timestamp")
    names = ds.all_entity_names("entity")
    got = set()
    for info, edges in ds.iter_edges("train"):
        weights = ds.bucket_attribute("train", info.lhs, info.rhs, "weight")
        stamps = ds.bucket_attribute("train", info.lhs, info.rhs, "timestamp")
        offsets = ds.entity_types["entity"].offsets
        for (a, _, b), w, t in zip(edges.tolist(), weights.tolist(), stamps.tolist(), strict=True):
            got.add((names[offsets[info.lhs] + a], names[offsets[info.rhs] + b], w, t))
    assert got == {(a, b, float(w), float(np.float32(t))) for a, b, w, t in rows}
    ds.verify()
    import_edges([FORMATS / "konect.txt"], tmp_path / "e", columns="lhs,rhs,-,-", progress=False)
    assert Dataset(tmp_path / "e").edge_attributes == ()


def test_attribute_that_is_not_a_number(tmp_path: Path) -> None:
    (tmp_path / "g.txt").write_text("a b 1.5\nb c 2.5\nc d x\n")
    with pytest.raises(InputError, match=r"line 3, field 3 \(weight\): is 'x', not a number"):
        import_edges([tmp_path / "g.txt"], tmp_path / "d", columns="lhs,rhs,weight", progress=False)


# ----------------------------------------------------------------------------- compression, Parquet, remote


@pytest.mark.parametrize("suffix,opener", [(".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open),
                                           (".zst", None)])
def test_compressed_files(tmp_path: Path, suffix: str, opener: object) -> None:
    data = (FORMATS / "snap.txt").read_bytes()
    path = tmp_path / ("snap.txt" + suffix)
    if opener is None:
        zstandard = pytest.importorskip("zstandard")
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        with opener(path, "wb") as f:  # type: ignore[operator]
            f.write(data)
    summary = import_edges([path], tmp_path / "d", progress=False)
    assert summary.edges["train"] == 5 and summary.entities == 4


def test_parquet_dataset_directory_glob_and_hive(tmp_path: Path) -> None:
    root = tmp_path / "spark"
    edges = {"follows": [("a", "b"), ("b", "c")], "likes": [("c", "a"), ("a", "d"), ("d", "b")]}
    for rel, pairs in edges.items():
        part = root / f"rel={rel}"
        part.mkdir(parents=True)
        table = pa.table({"src": [p[0] for p in pairs], "dst": [p[1] for p in pairs],
                          "unused": [1.0] * len(pairs)})
        pq.write_table(table, part / "part-00000-abc.snappy.parquet")
    (root / "_SUCCESS").write_text("")
    expected = {(a, rel, b) for rel, pairs in edges.items() for a, b in pairs}
    summary = import_edges([root], tmp_path / "d", columns="src=lhs,dst=rhs,rel=rel", progress=False)
    assert summary.edges["train"] == 5 and summary.entities == 4 and summary.relations == 2
    assert edges_of(tmp_path / "d") == expected
    import_edges([str(root / "*" / "part-*.parquet")], tmp_path / "e", columns="src=lhs,dst=rhs", progress=False)
    assert edges_of(tmp_path / "e") == {(a, "edge", b) for a, _, b in expected}


def test_remote_path_without_its_package(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    try:
        import adlfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("adlfs is installed")
    with pytest.raises(InputError, match=r"abfs://container/edges.tsv: is on abfs://, which needs adlfs "
                                         r"\(pip install adlfs\)"):
        import_edges(["abfs://container/edges.tsv"], tmp_path / "d", progress=False)


def test_fsspec_path(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/shardgraph-test/g.txt", b"# remote\n1 2\n2 3\n3 1\n")
    summary = import_edges(["memory://shardgraph-test/g.txt"], tmp_path / "d", progress=False)
    assert summary.edges["train"] == 3 and summary.entities == 3 and summary.comment_lines == 1


@pytest.mark.parametrize("kind", ["plain", "gzip", "parquet"])
def test_reader_progress_runs_from_zero_to_the_size_on_disk(tmp_path: Path, kind: str) -> None:
    """The import's progress bar (and its ETA) is in bytes of the input on disk: each reader's
    `bytes_read` grows block by block and ends at the file's size."""
    from shardgraph.data.reader import EdgeFileReader

    rng = np.random.default_rng(0)
    lines = [f"n{a}\tr{a % 3}\tn{b}" for a, b in rng.integers(0, 50_000, size=(60_000, 2)).tolist()]
    text = ("\n".join(lines) + "\n").encode()
    if kind == "plain":
        path = tmp_path / "e.tsv"
        path.write_bytes(text)
    elif kind == "gzip":
        path = tmp_path / "e.tsv.gz"
        path.write_bytes(gzip.compress(text, 1))
    else:
        path = tmp_path / "e.parquet"
        columns = list(zip(*(line.split("\t") for line in lines), strict=True))
        pq.write_table(pa.table({"lhs": columns[0], "rel": columns[1], "rhs": columns[2]}), path, row_group_size=5000)
    reader = EdgeFileReader(path, block_bytes=64 << 10)
    assert reader.size_bytes == path.stat().st_size
    seen, rows = [], 0
    for block in reader:
        rows += len(block)
        seen.append(reader.bytes_read)
    assert rows == len(lines)
    assert len(seen) > 3 and seen == sorted(seen) and 0 < seen[0] < reader.size_bytes
    assert reader.bytes_read == reader.size_bytes
