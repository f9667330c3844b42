"""Import: exact buckets and dictionaries, round trips, formats, and the promised errors."""

from __future__ import annotations

import collections
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardgraph.config import load_config
from shardgraph.data.dataset import Dataset
from shardgraph.data.importer import import_edges
from shardgraph.errors import InputError, ShardgraphError
from tests.conftest import FB15K237, REPO, write_lines


def read_back(path: Path, split: str = "train") -> collections.Counter[tuple[str, str, str]]:
    """The edges of a split as a multiset of (lhs id, relation name, rhs id) strings."""
    dataset = Dataset(path)
    names = {(t, p): dataset.entity_names(t, p) for t, info in dataset.entity_types.items()
             for p in range(info.partitions)}
    out: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for info, edges in dataset.iter_edges(split):
        for lhs, rel, rhs in np.asarray(edges):
            relation = dataset.relations[rel]
            out[(names[relation.lhs, info.lhs][lhs], relation.name, names[relation.rhs, info.rhs][rhs])] += 1
    return out


def file_multiset(path: Path) -> collections.Counter[tuple[str, ...]]:
    return collections.Counter(tuple(line.split("\t")) for line in path.read_text().splitlines())


def no_temp_left(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# ----------------------------------------------------------------------------- exact layout


def test_tiny_graph_exact_buckets_and_dictionaries(tmp_path: Path) -> None:
    edges = write_lines(tmp_path / "g.tsv", ["a\tr\tb", "b\ts\tc", "c\tr\ta", "d\tr\ta", "a\ts\td"])
    summary = import_edges([edges], tmp_path / "ds", config=load_config(None, ["data.shuffle=false"]),
                           partitions=2, progress=False)
    assert summary.entities == 4 and summary.relations == 2 and summary.edges["train"] == 5
    ds = Dataset(tmp_path / "ds")
    # ids in order of first appearance a=0 b=1 c=2 d=3; partition = id % 2, local = id // 2
    assert ds.entity_names("entity", 0) == ["a", "c"]
    assert ds.entity_names("entity", 1) == ["b", "d"]
    assert [r.name for r in ds.relations] == ["r", "s"]
    buckets = {(b.lhs, b.rhs): np.asarray(ds.bucket_edges("train", b.lhs, b.rhs)).tolist()
               for b in ds.buckets("train")}
    assert buckets == {
        (0, 0): [[1, 0, 0]],            # c r a
        (0, 1): [[0, 0, 0], [0, 1, 1]],  # a r b, a s d
        (1, 0): [[0, 1, 1], [1, 0, 0]],  # b s c, d r a
    }
    assert ds.manifest["entity_types"]["entity"]["partition_counts"] == [2, 2]
    ds.verify()


def test_round_trip_and_partition_invariance(tmp_path: Path, umls: dict[str, Path]) -> None:
    import_edges([umls["train"]], tmp_path / "p1", partitions=1, progress=False)
    import_edges([umls["train"]], tmp_path / "p4", partitions=4, progress=False)
    expected = file_multiset(umls["train"])
    assert read_back(tmp_path / "p1") == expected
    assert read_back(tmp_path / "p4") == expected
    counts = Dataset(tmp_path / "p4").entity_types["entity"].partition_counts
    assert max(counts) - min(counts) <= 1  # balanced


def test_fb15k237_published_counts(tmp_path: Path) -> None:
    summary = import_edges([FB15K237 / "train.txt.gz"], tmp_path / "fb", valid=[FB15K237 / "valid.txt.gz"],
                           test=[FB15K237 / "test.txt.gz"], progress=False)
    assert summary.entities == 14_541
    assert summary.relations == 237
    assert summary.edges == {"train": 272_115, "valid": 17_535, "test": 20_466}


def test_formats_give_the_same_dataset(tmp_path: Path, nations: dict[str, Path]) -> None:
    rows = [line.split("\t") for line in nations["train"].read_text().splitlines()]
    with gzip.open(tmp_path / "g.tsv.gz", "wt") as f:
        f.write("".join("\t".join(r) + "\n" for r in rows))
    write_lines(tmp_path / "g.csv", ['"' + r[0] + '",' + r[1] + "," + r[2] for r in rows])
    pq.write_table(pa.table({"lhs": [r[0] for r in rows], "rel": [r[1] for r in rows],
                             "rhs": [r[2] for r in rows]}), tmp_path / "g.parquet")
    write_lines(tmp_path / "g_crlf.tsv", ["\t".join(r) for r in rows], newline="\r\n")
    write_lines(tmp_path / "g_swapped.tsv", ["\t".join([r[2], r[1], r[0], "x"]) for r in rows])
    expected = file_multiset(nations["train"])
    for name, kwargs in [("g.tsv.gz", {}), ("g.csv", {}), ("g.parquet", {}), ("g_crlf.tsv", {}),
                         ("g_swapped.tsv", {"columns": "rhs,rel,lhs,-"})]:
        out = tmp_path / f"ds-{name}"
        import_edges([tmp_path / name], out, partitions=3, progress=False, **kwargs)  # type: ignore[arg-type]
        assert read_back(out) == expected, name


def test_two_columns_and_header(tmp_path: Path) -> None:
    edges = write_lines(tmp_path / "g.csv", ["src,dst", "1,2", "2,3", "3,1"])
    import_edges([edges], tmp_path / "ds", header=True, progress=False)
    ds = Dataset(tmp_path / "ds")
    assert [r.name for r in ds.relations] == ["edge"]
    assert read_back(tmp_path / "ds") == collections.Counter({("1", "edge", "2"): 1, ("2", "edge", "3"): 1,
                                                              ("3", "edge", "1"): 1})


def test_heterogeneous_graph(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("""
[entities.user]
partitions = 2
[entities.item]
partitions = 1
[[relations]]
name = "buys"
lhs = "user"
rhs = "item"
[[relations]]
name = "follows"
lhs = "user"
rhs = "user"
""")
    edges = write_lines(tmp_path / "g.tsv", ["u1\tbuys\tx", "u2\tfollows\tu1", "u3\tbuys\tx", "u3\tbuys\ty"])
    import_edges([edges], tmp_path / "ds", config=config, progress=False)
    ds = Dataset(tmp_path / "ds")
    assert ds.entity_types["user"].count == 3 and ds.entity_types["item"].count == 2
    assert ds.entity_names("item", 0) == ["x", "y"]
    assert read_back(tmp_path / "ds") == collections.Counter(
        {("u1", "buys", "x"): 1, ("u2", "follows", "u1"): 1, ("u3", "buys", "x"): 1, ("u3", "buys", "y"): 1})
    # the same ids in different types are different entities
    edges2 = write_lines(tmp_path / "g2.tsv", ["a\tbuys\ta"])
    import_edges([edges2], tmp_path / "ds2", config=config, progress=False)
    ds2 = Dataset(tmp_path / "ds2")
    assert ds2.entity_types["user"].count == 1 and ds2.entity_types["item"].count == 1


def test_unseen_keep_and_drop(tmp_path: Path) -> None:
    train = write_lines(tmp_path / "train.tsv", ["a\tr\tb", "b\tr\tc"])
    test = write_lines(tmp_path / "test.tsv", ["a\tr\tc", "a\tr\tz", "y\tr\tz"])
    keep = import_edges([train], tmp_path / "keep", test=[test], progress=False)
    assert keep.entities == 5 and keep.edges["test"] == 3 and keep.unseen_entities == {"entity": 2}
    drop = import_edges([train], tmp_path / "drop", test=[test], unseen="drop", progress=False)
    assert drop.entities == 3 and drop.edges["test"] == 1
    assert drop.unseen_entities == {"entity": 2} and drop.dropped_edges == {"test": 2}
    assert read_back(tmp_path / "drop", "test") == collections.Counter({("a", "r", "c"): 1})


def test_small_blocks_stream(tmp_path: Path, kinship: dict[str, Path]) -> None:
    """Many blocks (1 MiB each is the minimum; kinship has ~8.5k lines) give the same result."""
    lines = kinship["train"].read_text().splitlines() * 20
    edges = write_lines(tmp_path / "big.tsv", lines)
    config = load_config(None, ["data.block_mb=1"])
    summary = import_edges([edges], tmp_path / "ds", config=config, partitions=2, progress=False)
    assert summary.edges["train"] == len(lines)
    assert read_back(tmp_path / "ds") == collections.Counter(tuple(x.split("\t")) for x in lines)


def test_training_buckets_are_shuffled_at_import(tmp_path: Path, kinship: dict[str, Path]) -> None:
    """A file sorted by lhs reaches the buckets in random order: the same edges, every bucket's lhs
    sequence uncorrelated with its position, valid/test left in file order, and the same dataset
    from the same input."""
    lines = sorted(kinship["train"].read_text().splitlines())
    edges = write_lines(tmp_path / "sorted.tsv", lines)
    test = write_lines(tmp_path / "test.tsv", lines[:50])
    for name in ("a", "b"):
        import_edges([edges], tmp_path / name, test=[test], partitions=2, progress=False)
    plain = import_edges([edges], tmp_path / "plain", test=[test], partitions=2, progress=False,
                         config=load_config(None, ["data.shuffle=false"]))
    assert read_back(tmp_path / "a") == read_back(tmp_path / "plain") == file_multiset(edges)
    ds, ds_b, ds_plain = Dataset(tmp_path / "a"), Dataset(tmp_path / "b"), Dataset(tmp_path / "plain")
    assert ds.manifest["train_shuffled"] is True and ds_plain.manifest["train_shuffled"] is False
    ds.verify()
    for b in ds.buckets("train"):
        rows = np.asarray(ds.bucket_edges("train", b.lhs, b.rhs))
        sorted_rows = np.asarray(ds_plain.bucket_edges("train", b.lhs, b.rhs))
        assert np.array_equal(rows, np.asarray(ds_b.bucket_edges("train", b.lhs, b.rhs)))
        # the input is sorted by lhs: without the shuffle neighbouring rows share their lhs almost
        # always; shuffled, about as often as two random rows do (1/52 for 104 entities in 2 parts)
        assert np.mean(sorted_rows[1:, 0] == sorted_rows[:-1, 0]) > 0.9
        assert np.mean(rows[1:, 0] == rows[:-1, 0]) < 0.05
    assert read_back(tmp_path / "a", "test") == file_multiset(test)
    test_rows = [np.asarray(ds.bucket_edges("test", b.lhs, b.rhs)) for b in ds.buckets("test")]
    plain_rows = [np.asarray(ds_plain.bucket_edges("test", b.lhs, b.rhs)) for b in ds_plain.buckets("test")]
    assert all(np.array_equal(x, y) for x, y in zip(test_rows, plain_rows, strict=True))
    assert plain.edges == import_edges([edges], tmp_path / "c", test=[test], partitions=2, progress=False).edges


def test_bucket_buffer_size_does_not_change_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows wait in memory before they reach their bucket files. Written after every block (and shuffled on
    disk) or held to the end (and shuffled in memory), the dataset is the same, byte for byte, and each
    edge keeps its own weight."""
    import shardgraph.data.importer as importer

    n = 150_000  # ~3.5 MB of text: several 1 MiB blocks
    lines = [f"e{i % 5000}\tr{i % 7}\te{(i // 5000 + 37 * (i % 5000)) % 5000}\t{i}" for i in range(n)]  # distinct
    edges = write_lines(tmp_path / "w.tsv", lines)
    test = write_lines(tmp_path / "t.tsv", lines[:300])
    config = load_config(None, ["data.block_mb=1"])
    datasets = []
    for name, buffer_bytes in (("held", 1 << 40), ("written", 1)):
        monkeypatch.setattr(importer, "BUCKET_BUFFER_BYTES", buffer_bytes)
        import_edges([edges], tmp_path / name, test=[test], config=config, columns="lhs,rel,rhs,weight",
                     partitions=3, progress=False)
        datasets.append(Dataset(tmp_path / name))
    held, written = datasets
    assert held.manifest["splits"] == written.manifest["splits"]
    weight_of = {tuple(line.split("\t")[:3]): float(line.split("\t")[3]) for line in lines}
    names = {p: held.entity_names("entity", p) for p in range(3)}
    seen = 0
    for b in held.buckets("train"):
        rows = np.asarray(held.bucket_edges("train", b.lhs, b.rhs))
        weights = held.bucket_attribute("train", b.lhs, b.rhs, "weight")
        assert np.array_equal(rows, np.asarray(written.bucket_edges("train", b.lhs, b.rhs)))
        assert np.array_equal(weights, written.bucket_attribute("train", b.lhs, b.rhs, "weight"))
        assert np.mean(np.diff(weights) > 0) < 0.6  # shuffled: the file's order would make it 1
        for (lhs, rel, rhs), weight in zip(rows[:200], weights[:200], strict=False):
            key = (names[b.lhs][lhs], held.relations[rel].name, names[b.rhs][rhs])
            assert weight_of[key] == weight
        seen += len(rows)
    assert seen == n
    held.verify()
    written.verify()


@pytest.mark.parametrize("memory_rows", [100_000, 2_000], ids=["in memory", "scatter-gather"])
def test_shuffle_rows_is_a_uniform_permutation_carrying_attributes(tmp_path: Path, memory_rows: int) -> None:
    """Both paths of shuffle_rows on a sorted input: each row kept once with its attribute, the new
    files' checksums, no file left behind, and the order random: rows of each tenth of the input
    spread evenly over each tenth of the output (chi-square), no runs left in input order."""
    from shardgraph.data.shuffle import shuffle_rows
    from shardgraph.utils.npy import payload_checksum

    n = 20_000
    rows = np.stack([np.arange(n), np.arange(n) % 7, np.arange(n) * 3], axis=1).astype(np.int32)
    weights = (np.arange(n) * 0.5).astype(np.float32)
    paths = [tmp_path / "bucket.npy", tmp_path / "bucket.weight.npy"]
    np.save(paths[0], rows)
    np.save(paths[1], weights)
    checksums = shuffle_rows(paths, seed=(1, 2, 3), memory_rows=memory_rows)
    shuffled, shuffled_weights = np.load(paths[0]), np.load(paths[1])
    assert np.array_equal(np.sort(shuffled[:, 0]), np.arange(n))
    assert np.array_equal(shuffled[:, 1:], rows[shuffled[:, 0], 1:])
    assert np.array_equal(shuffled_weights, weights[shuffled[:, 0]])
    assert checksums == [payload_checksum(shuffled), payload_checksum(shuffled_weights)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket.npy", "bucket.weight.npy"]
    # 10 x 10 table: tenth of the input (row id) against tenth of the output (position); 200 expected
    # in each cell, chi-square with 81 degrees of freedom (mean 81, sd 12.7)
    table = np.zeros((10, 10))
    np.add.at(table, (shuffled[:, 0] * 10 // n, np.arange(n) * 10 // n), 1)
    assert ((table - 200) ** 2 / 200).sum() < 150
    # in a random order a row is followed by a larger id half the time (sd 0.002 at n = 20000)
    assert abs(np.mean(shuffled[1:, 0] > shuffled[:-1, 0]) - 0.5) < 0.02
    again = tmp_path / "again.npy"
    np.save(again, rows)
    shuffle_rows([again], seed=(1, 2, 3), memory_rows=memory_rows)
    assert np.array_equal(np.load(again), shuffled)


def test_npy_reader_reads_row_ranges_and_refuses_a_truncated_file(tmp_path: Path) -> None:
    from shardgraph.utils.npy import NpyAppender, NpyReader

    rows = np.arange(3000, dtype=np.int64).reshape(1000, 3)
    np.save(tmp_path / "saved.npy", rows)  # numpy's own header
    appended = NpyAppender(tmp_path / "appended.npy", np.float32, None)  # our fixed-size header, 1-D
    appended.append(np.arange(10, dtype=np.float32))
    appended.close()
    saved = NpyReader(tmp_path / "saved.npy")
    assert (saved.rows, saved.shape, saved.dtype) == (1000, (1000, 3), np.dtype(np.int64))
    assert np.array_equal(saved.read(17, 403), rows[17:403])
    assert np.array_equal(saved.read(990, 2000), rows[990:])
    assert saved.read(5, 5).shape == (0, 3)
    assert np.array_equal(NpyReader(tmp_path / "appended.npy").read(2, 5), [2.0, 3.0, 4.0])
    data = (tmp_path / "saved.npy").read_bytes()
    (tmp_path / "saved.npy").write_bytes(data[:-8])
    with pytest.raises(ValueError, match=r"saved\.npy: truncated"):
        NpyReader(tmp_path / "saved.npy").read(0, 1000)


# ----------------------------------------------------------------------------- bad input


def expect_input_error(tmp_path: Path, lines: list[str] | bytes, match: str, **kwargs: object) -> InputError:
    path = tmp_path / "bad.tsv"
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        write_lines(path, lines)
    with pytest.raises(InputError, match=match) as info:
        import_edges([path], tmp_path / "out", progress=False, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    assert no_temp_left(tmp_path)
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.tsv: does not exist"):
        import_edges([tmp_path / "nope.tsv"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_file(tmp_path: Path) -> None:
    expect_input_error(tmp_path, b"", "bad.tsv: is empty")


def test_wrong_number_of_fields(tmp_path: Path) -> None:
    error = expect_input_error(tmp_path, ["a\tr\tb", "b\tr\tc", "c\tr"], r"bad.tsv, line 3: has 2 fields")
    assert error.line == 3


def test_wrong_number_of_fields_in_a_later_block(tmp_path: Path) -> None:
    lines = [f"n{i}\tr\tn{i + 1}" for i in range(120_000)]
    lines[100_000] = "x\ty"
    config = load_config(None, ["data.block_mb=1"])
    error = expect_input_error(tmp_path, lines, r"line 100001: has 2 fields", config=config)
    assert error.line == 100_001


def test_empty_id(tmp_path: Path) -> None:
    error = expect_input_error(tmp_path, ["a\tr\tb", "\tr\tc"], r"line 2, field 1 \(lhs\): is empty")
    assert error.field == "1 (lhs)"


def test_not_utf8(tmp_path: Path) -> None:
    error = expect_input_error(tmp_path, b"a\tr\tb\nb\tr\tc\xff\xfe\n", r"line 2, field 3 \(rhs\): is not valid UTF-8")
    assert error.line == 2


def test_unknown_relation_when_declared(tmp_path: Path) -> None:
    config = load_config(None, ['relations=[{name="r"}]'])
    expect_input_error(tmp_path, ["a\tr\tb", "b\tq\tc"], r"line 2, field 2 \(rel\): relation 'q' is not declared",
                       config=config)


def test_relation_types_disagree_with_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[entities.user]\n[entities.item]\n[[relations]]\nname = "buys"\nlhs = "user"\nrhs = "item"\n')
    expect_input_error(tmp_path, ["u1\tuser\tbuys\tx\titem", "u2\tuser\tbuys\tu1\tuser"],
                       r"line 2, field 5 \(rhs_type\): entity type 'user' disagrees with the config",
                       config=config, columns="lhs,lhs_type,rel,rhs,rhs_type")


def test_output_exists(tmp_path: Path, nations: dict[str, Path]) -> None:
    import_edges([nations["train"]], tmp_path / "ds", progress=False)
    before = (tmp_path / "ds" / "manifest.json").read_text()
    with pytest.raises(ShardgraphError, match="already exists; pass --overwrite"):
        import_edges([nations["test"]], tmp_path / "ds", progress=False)
    assert (tmp_path / "ds" / "manifest.json").read_text() == before
    summary = import_edges([nations["test"]], tmp_path / "ds", overwrite=True, progress=False)
    assert Dataset(tmp_path / "ds").edge_count("train") == summary.edges["train"] == 201
    assert no_temp_left(tmp_path)


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full(tmp_path: Path, umls: dict[str, Path]) -> None:
    """A real full disk (a 64 KiB tmpfs) or, where mounting is not allowed, a file-size limit."""
    disk = tmp_path / "disk"
    if _tmpfs(disk, "64k"):
        try:
            with pytest.raises(ShardgraphError, match="No space left on the device"):
                import_edges([umls["train"]], disk / "ds", partitions=4, progress=False)
            assert list(disk.iterdir()) == []
        finally:
            subprocess.run(["umount", str(disk)], check=False)
        return
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from shardgraph.cli import main\n"
        f"sys.exit(main(['import', {str(umls['train'])!r}, '--out', {str(disk / 'ds')!r}, '--no-progress']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert "No space left on the device" in proc.stderr
    assert list(disk.iterdir()) == []


def test_interrupt_leaves_nothing(tmp_path: Path) -> None:
    """SIGINT in the middle of an import: exit 130, no output, no temporary directory."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 200_000, size=(1_500_000, 2))
    with open(tmp_path / "big.tsv", "w") as f:
        f.write("".join(f"n{a}\tr\tn{b}\n" for a, b in ids.tolist()))
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "shardgraph", "import", str(tmp_path / "big.tsv"), "--out",
                             str(out), "--no-progress", "-p", "data.block_mb=1", "--partitions", "8"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]:
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the import finished before the signal arrived")
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not out.exists()
    assert no_temp_left(tmp_path)


# ----------------------------------------------------------------------------- CLI


def test_cli_json_and_info(tmp_path: Path, nations: dict[str, Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "shardgraph", "import", str(nations["train"]), "--valid", str(nations["valid"]),
         "--test", str(nations["test"]), "--out", str(tmp_path / "ds"), "--partitions", "2", "--json"],
        cwd=REPO, capture_output=True, text=True, check=True)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["entities"] == 14 and summary["relations"] == 55
    assert summary["edges"] == {"train": 1592, "valid": 199, "test": 201}
    assert summary["partitions"] == 2 and summary["seconds"] > 0 and summary["peak_rss_mb"] > 0
    info = subprocess.run([sys.executable, "-m", "shardgraph", "info", str(tmp_path / "ds"), "--verify"],
                          cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "14 entities in 2 partition(s)" in info and "checksums: ok" in info
    bad = subprocess.run([sys.executable, "-m", "shardgraph", "import", str(tmp_path / "none.tsv"), "--out",
                          str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "none.tsv: does not exist" in bad.stderr


def test_entity_name_array_equals_the_text_dictionary(tmp_path: Path) -> None:
    """The arrow reading of a partition's ids (no Python str per id) gives the ids of the text reading."""
    lines = [f"n{i}\tr\tnode {i} é" for i in range(50)] + ["ü\tr\t日本"]
    import_edges([write_lines(tmp_path / "g.tsv", lines)], tmp_path / "ds", partitions=3, delimiter="tab",
                 progress=False)
    ds = Dataset(tmp_path / "ds")
    for p in range(3):
        array = ds.entity_name_array("entity", p)
        assert array.type == pa.large_string()
        assert array.to_pylist() == ds.entity_names("entity", p)
    assert "日本" in ds.entity_name_array("entity", 0).to_pylist() + ds.entity_name_array("entity", 1).to_pylist() \
        + ds.entity_name_array("entity", 2).to_pylist()


@pytest.mark.parametrize(("row", "column", "value", "bad"), [
    (0, 2, 1, False),  # buys u -> item 1: in range
    (0, 2, 2, True),   # buys u -> item 2: only 2 items (a user id that high would be fine)
    (1, 2, 2, False),  # follows u -> user 2: 3 users
    (1, 0, -1, True),  # a negative id
    (2, 1, 2, True),   # relation 2: there are two
    (1, 0, 3, True),   # user 3 of 3
])
def test_a_bucket_naming_an_entity_the_dataset_lacks_is_refused(tmp_path: Path, row: int, column: int, value: int,
                                                                bad: bool) -> None:
    """Ids outside their type's range (per relation), negative ids and unknown relations never reach the
    training kernels, which index tables with them; the checksum is made to match, as a faulty writer would."""
    from shardgraph.errors import DatasetError
    from shardgraph.utils.npy import payload_checksum

    config = tmp_path / "c.toml"
    config.write_text('[entities.user]\n[entities.item]\n[[relations]]\nname = "buys"\nlhs = "user"\nrhs = "item"\n'
                      '[[relations]]\nname = "follows"\nlhs = "user"\nrhs = "user"\n')
    edges = write_lines(tmp_path / "g.tsv", ["u1\tbuys\tx", "u2\tfollows\tu1", "u3\tbuys\ty", "u3\tfollows\tu2"])
    import_edges([edges], tmp_path / "ds", config=config, progress=False)
    manifest_path = tmp_path / "ds" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    bucket = manifest["splits"]["train"]["buckets"][0]
    array = np.load(tmp_path / "ds" / bucket["file"], mmap_mode="r+")
    rows = {int(r): int(np.flatnonzero(array[:, 1] == r)[0]) for r in (0, 1)}  # the first edge of each relation
    rows[2] = rows[0]
    target = rows[row] if row < 2 else rows[2]
    array[target, column] = value
    array.flush()
    bucket["xxh3"] = payload_checksum(np.asarray(array))
    manifest_path.write_text(json.dumps(manifest))
    dataset = Dataset(tmp_path / "ds")
    info = dataset.buckets("train")[0]
    if bad:
        with pytest.raises(DatasetError, match=rf"row {target}: edge .* names an entity or relation"):
            dataset.bucket_path(info)
    else:
        assert dataset.bucket_path(info).exists()


def test_read_ahead_keeps_order_raises_in_place_and_stops_its_thread() -> None:
    """The import reads the next blocks in a thread: same items in the same order, an error of the reader
    raised after the items before it, and a consumer that stops early leaves no thread behind."""
    import threading

    from shardgraph.utils.prefetch import read_ahead

    def items(fail_at: int | None = None):  # type: ignore[no-untyped-def]
        for i in range(50):
            if i == fail_at:
                raise InputError("is bad", path="x.tsv", line=i + 1)
            yield i

    assert list(read_ahead(items(), depth=3)) == list(range(50))
    got = []
    with pytest.raises(InputError, match=r"x\.tsv, line 21"):
        for item in read_ahead(items(fail_at=20)):
            got.append(item)
    assert got == list(range(20))
    before = threading.active_count()
    stream = read_ahead(items(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert threading.active_count() == before
