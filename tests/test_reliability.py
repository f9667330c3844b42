"""Reliability: damaged and untrusted run directories and datasets (issue 18, parts 4 and 6).

Every case damages one file of a real dataset, run or index and checks that the load names the
file and says what differs, that nothing is unpickled, and that nothing a manifest names can
reach outside its directory or size an allocation before the file backs it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from shardgraph.config import load_config
from shardgraph.data.dataset import Dataset
from shardgraph.data.importer import import_edges
from shardgraph.errors import CheckpointError, DatasetError, QueryError, ShardgraphError
from shardgraph.storage.checkpoint import CheckpointStore
from shardgraph.storage.run import TrainedRun, create_run
from tests.conftest import REPO, kg_files

TINY = ["model.dimension=8", "training.workers=1", "training.batch_size=128", "training.num_batch_negs=16",
        "training.num_uniform_negs=16"]


def make_pristine(root: Path) -> Path:
    """nations in 2 partitions (root/ds) and a run on it (root/run: hand-made embeddings, one checkpoint)."""
    files = kg_files("nations")
    import_edges([files["train"]], root / "ds", valid=[files["valid"]], partitions=2, progress=False)
    dataset = Dataset(root / "ds")
    config = load_config(None, [*TINY, f"data.dataset={root / 'ds'}"])
    rng = np.random.default_rng(0)
    tables = [torch.from_numpy(rng.normal(size=(c, 8)).astype(np.float32))
              for c in dataset.entity_types["entity"].partition_counts]
    create_run(root / "run", config, dataset, {"entity": tables})
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pristine(tmp_path_factory.mktemp("pristine"))


@pytest.fixture
def copy(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the dataset and the run, whose run.json points at the copied dataset."""
    shutil.copytree(pristine / "ds", tmp_path / "ds")
    shutil.copytree(pristine / "run", tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    info["dataset"] = str(tmp_path / "ds")
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    return tmp_path


def flip_bit(path: Path, offset: int = -1) -> None:
    """Flip the lowest bit of one byte (default: the last, which is payload in every format here)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def load_everything(root: Path) -> None:
    """What eval / export / query do first: open the run and read every table, edge and id."""
    run = TrainedRun(root / "run")
    for name, spec in run.model.entity_types.items():
        for partition in range(spec.partitions):
            run.embeddings(name, partition)
            run.dataset.entity_names(name, partition)
    _ = run.relation_tables
    for split in ("train", "valid"):
        for _info, edges in run.dataset.iter_edges(split):
            np.asarray(edges).sum()


def manifest_of(root: Path) -> dict:
    return json.loads((root / "run" / "checkpoint" / "manifest.json").read_text())


def partition_file(root: Path, key: str = "embeddings") -> Path:
    return root / "run" / "checkpoint" / manifest_of(root)["partitions"]["entity"]["1"][key]


# ----------------------------------------------------------------------------- corruption (4)

DAMAGE = {
    # file -> (how to find it, how to damage it, what the message must say)
    "bucket flipped": (lambda r: r / "ds/edges/train/bucket_1_0.npy", flip_bit,
                       r"bucket_1_0\.npy does not match its checksum \(xxh3 \w+, the manifest says \w+\)"),
    "bucket truncated": (lambda r: r / "ds/edges/train/bucket_1_0.npy", truncate,
                         r"bucket_1_0\.npy is \d[\d,]* bytes, too small for the \(\d+, 3\) array"),
    "dictionary flipped": (lambda r: r / "ds/entities/entity/part_1.txt", lambda p: flip_bit(p, 0),
                           r"part_1\.txt does not match its checksum \(xxh3 \w+, the manifest says \w+\)"),
    "dataset manifest truncated": (lambda r: r / "ds/manifest.json", truncate, r"ds/manifest\.json is corrupt"),
    "embeddings flipped": (partition_file, flip_bit,
                           r"p1\.v\d+\.emb\.npy does not match its checksum \(xxh3 \w+, the manifest says \w+\)"),
    "embeddings truncated": (partition_file, truncate, r"p1\.v\d+\.emb\.npy is \d[\d,]* bytes, too small"),
    "optimizer state flipped": (lambda r: partition_file(r, "state"), flip_bit,
                                r"p1\.v\d+\.state\.npy does not match its checksum"),
    "relations flipped": (lambda r: r / "run/checkpoint" / manifest_of(r)["relations"]["file"],
                          lambda p: flip_bit(p, len(p.read_bytes()) // 2),
                          r"relations\.v\d+\.npz does not match its checksum"),
    "checkpoint manifest truncated": (lambda r: r / "run/checkpoint/manifest.json", truncate,
                                      r"checkpoint/manifest\.json is corrupt"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_is_detected_on_load_with_the_file_name(copy: Path, case: str) -> None:
    locate, damage, message = DAMAGE[case]
    load_everything(copy)  # intact: loads
    damage(locate(copy))
    with pytest.raises(ShardgraphError, match=message):
        load_everything(copy)


def test_the_buffer_checks_what_it_reads(copy: Path) -> None:
    """The trainer's partition loads (straight into shared memory) verify the checksum too."""
    store = CheckpointStore(copy / "run")
    files = store.partition_files(store.manifest() or {}, "entity", 1)
    table, state = torch.empty(files.rows, files.dim), torch.empty(files.rows)
    store.read_partition_into(files, table, state)
    flip_bit(copy / "run/checkpoint" / files.embeddings)
    with pytest.raises(CheckpointError, match=r"p1\.v\d+\.emb\.npy does not match its checksum \(xxh3 \w+"):
        store.read_partition_into(files, table, state)


@pytest.mark.parametrize("case", ["flipped", "truncated"])
def test_damaged_index_is_detected_before_faiss_reads_it(copy: Path, case: str) -> None:
    pytest.importorskip("faiss")
    from shardgraph.embeddings.index import NeighborIndex, build_index
    from shardgraph.embeddings.model import load

    build_index(load(copy / "run"), copy / "index", kind="flat", metric="cos")
    NeighborIndex.load(copy / "index")
    (flip_bit if case == "flipped" else truncate)(copy / "index" / "index.faiss")
    with pytest.raises(QueryError, match=r"index\.faiss does not match its checksum \(xxh3 \w+, meta\.json says"):
        NeighborIndex.load(copy / "index")


def test_training_refuses_a_damaged_bucket(copy: Path) -> None:
    from shardgraph.training.trainer import train

    flip_bit(copy / "ds/edges/train/bucket_0_1.npy")
    config = load_config(None, [*TINY, f"data.dataset={copy / 'ds'}", "training.epochs=1"])
    with pytest.raises(DatasetError, match=r"bucket_0_1\.npy does not match its checksum"):
        train(config, run_dir=copy / "new", progress=False)


def test_resume_falls_back_to_the_previous_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The newest checkpoint damaged: --resume takes the one before it (kept by keep_checkpoints=2),
    says so, sets the damaged one aside, and finishes; with every kept one damaged it refuses."""
    from shardgraph.training.trainer import train

    files = kg_files("nations")
    import_edges([files["train"]], tmp_path / "ds", partitions=2, progress=False)
    config = load_config(None, [*TINY, f"data.dataset={tmp_path / 'ds'}", "training.epochs=2"])
    train(config, run_dir=tmp_path / "run", progress=False)
    store = CheckpointStore(tmp_path / "run")
    latest = store.manifest()
    assert latest is not None and latest["epoch"] == 2
    history = sorted((tmp_path / "run/checkpoint/history").glob("manifest.v*.json"))
    assert len(history) == 2, "keep_checkpoints=2 keeps the previous checkpoint"
    flip_bit(tmp_path / "run/checkpoint" / latest["partitions"]["entity"]["0"]["embeddings"])

    longer = load_config(None, [*TINY, f"data.dataset={tmp_path / 'ds'}", "training.epochs=3"])
    with caplog.at_level(logging.WARNING, logger="shardgraph"):
        train(longer, run_dir=tmp_path / "run", resume=True, progress=False)
    assert re.search(r"latest checkpoint is damaged \(.*p0\.v\d+\.emb\.npy does not match its checksum.*\); "
                     r"resuming from the intact checkpoint v\d+ \(epoch 1", caplog.text), caplog.text
    assert list((tmp_path / "run/checkpoint/history").glob("damaged-manifest.v*.json"))
    assert manifest_of(tmp_path)["epoch"] == 3
    assert [r["epoch"] for r in manifest_of(tmp_path)["history"]] == [1, 2, 3]
    load_everything(tmp_path)

    for path in (tmp_path / "run/checkpoint").rglob("*.emb.npy"):
        flip_bit(path)
    with pytest.raises(CheckpointError, match=r"every kept checkpoint of .* is damaged: .*\.emb\.npy does not match"):
        CheckpointStore(tmp_path / "run").resumable()


# ----------------------------------------------------------------------------- untrusted input (6)

OUTSIDE_NAMES = ["../../outside.npy", "/etc/passwd", "edges/../../outside.npy"]


@pytest.mark.parametrize("name", OUTSIDE_NAMES)
def test_dataset_manifest_cannot_name_a_file_outside(copy: Path, name: str) -> None:
    manifest = json.loads((copy / "ds/manifest.json").read_text())
    manifest["splits"]["train"]["buckets"][0]["file"] = name
    (copy / "ds/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=re.escape(repr(name)) + ", outside its directory"):
        load_everything(copy)


@pytest.mark.parametrize("name", OUTSIDE_NAMES)
def test_checkpoint_manifest_cannot_name_a_file_outside(copy: Path, name: str) -> None:
    path = copy / "run/checkpoint/manifest.json"
    manifest = json.loads(path.read_text())
    manifest["partitions"]["entity"]["0"]["embeddings"] = name
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=re.escape(repr(name)) + ", outside its directory"):
        TrainedRun(copy / "run")


def test_symlinks_inside_a_run_or_dataset_are_refused(copy: Path) -> None:
    bucket = copy / "ds/edges/train/bucket_0_0.npy"
    shutil.move(bucket, copy / "elsewhere.npy")
    bucket.symlink_to(copy / "elsewhere.npy")
    with pytest.raises(DatasetError, match=r"bucket_0_0\.npy is a symbolic link; refused"):
        load_everything(copy)

    emb = partition_file(copy)
    shutil.move(emb, copy / "elsewhere.emb.npy")
    emb.symlink_to(copy / "elsewhere.emb.npy")
    with pytest.raises(CheckpointError, match=r"p1\.v\d+\.emb\.npy is a symbolic link; refused"):
        TrainedRun(copy / "run")


def test_entity_type_names_cannot_climb_out(copy: Path) -> None:
    manifest = json.loads((copy / "ds/manifest.json").read_text())
    manifest["entity_types"]["../../x"] = manifest["entity_types"].pop("entity")
    (copy / "ds/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="outside its directory"):
        Dataset(copy / "ds")


def test_a_manifest_claiming_huge_counts_fails_before_allocating(copy: Path) -> None:
    """10^12 entities or rows: refused on a stat of the file that would hold them, not in the allocator."""
    manifest = json.loads((copy / "ds/manifest.json").read_text())
    manifest["entity_types"]["entity"]["partition_counts"][0] = 10**12
    (copy / "ds/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"claims 1,000,000,000,000 entities .* cannot hold them"):
        Dataset(copy / "ds")

    path = copy / "run/checkpoint/manifest.json"
    checkpoint = json.loads(path.read_text())
    checkpoint["partitions"]["entity"]["1"]["rows"] = 10**12
    path.write_text(json.dumps(checkpoint))
    store = CheckpointStore(copy / "run")
    files = store.partition_files(store.manifest() or {}, "entity", 1)
    with pytest.raises(CheckpointError, match=r"too small for the \(1000000000000, 8\) array"):
        store.load_partition(files, mmap=False)


def test_a_pickle_in_a_run_directory_is_never_run(tmp_path: Path) -> None:
    """A model.pt holding a pickled callable (what torch.save writes for any object): refused,
    and the callable never runs."""
    from shardgraph.gnn.predict import SageModel

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    (tmp_path / "run").mkdir()
    torch.save({"version": 1, "evil": Payload()}, tmp_path / "run" / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt holds Python objects besides tensors"):
        SageModel(tmp_path / "run")
    assert not marker.exists()


def test_no_code_path_unpickles() -> None:
    """The library never opts into pickle: no weights_only=False, allow_pickle=True, pickle.load."""
    offenders = []
    for path in (REPO / "shardgraph").rglob("*.py"):
        text = path.read_text()
        for pattern in (r"weights_only\s*=\s*False", r"allow_pickle\s*=\s*True", r"\bpickle\.loads?\(",
                        r"torch\.load\((?![^)]*weights_only=True)"):
            offenders += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not offenders, offenders


# ----------------------------------------------------------------------------- full disk (3)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs) mounted for the test and removed after; skipped where
    mounting is not permitted (an unprivileged user, a container without CAP_SYS_ADMIN)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root (mount -t tmpfs); not permitted here")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Take every free byte of the filesystem but `leave` with one file (removed to free the space again)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to flush at close
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        f.truncate(max(0, f.tell() - leave))
    return filler


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(small_disk: Path, tmp_path: Path) -> None:
    from shardgraph.training.trainer import train

    files = kg_files("nations")
    import_edges([files["train"]], tmp_path / "ds", partitions=2, progress=False)
    run = small_disk / "run"
    train(load_config(None, [*TINY, f"data.dataset={tmp_path / 'ds'}", "training.epochs=1"]), run_dir=run,
          progress=False)
    before = json.loads((run / "checkpoint/manifest.json").read_text())
    # room for the lock and the rewritten config (a page each), not for the checkpoint's files
    filler = fill(small_disk, leave=3 * 4096)
    longer = load_config(None, [*TINY, f"data.dataset={tmp_path / 'ds'}", "training.epochs=2"])
    with pytest.raises(ShardgraphError, match=rf"No space left on the device while writing {run}/checkpoint"):
        train(longer, run_dir=run, resume=True, progress=False)
    assert json.loads((run / "checkpoint/manifest.json").read_text()) == before
    store = CheckpointStore(run)
    store.verify(before)  # the previous checkpoint is whole
    assert not temp_files(small_disk)
    filler.unlink()
    train(longer, run_dir=run, resume=True, progress=False)
    assert json.loads((run / "checkpoint/manifest.json").read_text())["epoch"] == 2


def test_full_disk_during_an_export_leaves_nothing(small_disk: Path, copy: Path) -> None:
    from shardgraph.embeddings.writers import export

    filler = fill(small_disk)
    out = small_disk / "emb.tsv"
    with pytest.raises(ShardgraphError, match=rf"No space left on the device while writing {out}"):
        export(copy / "run", "tsv", out)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]
    filler.unlink()
    export(copy / "run", "tsv", out)
    assert len(out.read_text().splitlines()) == 14


def test_full_disk_during_an_import_leaves_the_previous_dataset(small_disk: Path) -> None:
    files = kg_files("nations")
    import_edges([files["train"]], small_disk / "ds", partitions=2, progress=False)
    before = (small_disk / "ds/manifest.json").read_text()
    filler = fill(small_disk)
    with pytest.raises(ShardgraphError, match=rf"No space left on the device while writing {small_disk / 'ds'}"):
        import_edges([files["train"], files["valid"]], small_disk / "ds", partitions=2, overwrite=True,
                     progress=False)
    assert (small_disk / "ds/manifest.json").read_text() == before
    Dataset(small_disk / "ds").verify()
    assert not temp_files(small_disk)
    filler.unlink()
    import_edges([files["train"], files["valid"]], small_disk / "ds", partitions=2, overwrite=True, progress=False)
    assert Dataset(small_disk / "ds").edge_count("train") > 0


def test_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    """What kill -9 leaves (a .NAME.tmp-PID-... sibling) goes when the next output of that name is made;
    a live process's temporary stays."""
    from shardgraph.utils.atomic import atomic_directory, atomic_write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale_dir = tmp_path / f".ds.tmp-{dead}-0123abcd"
    stale_file = tmp_path / f".out.txt.tmp-{dead}-0123abcd"
    live = tmp_path / f".ds.tmp-{os.getpid()}-0123abcd"
    for path in (stale_dir, live):
        path.mkdir()
    stale_file.write_text("half")
    with atomic_directory(tmp_path / "ds") as temp:
        (temp / "x").write_text("x")
    atomic_write_text(tmp_path / "out.txt", "whole")
    assert not stale_dir.exists() and not stale_file.exists()
    assert live.exists()
