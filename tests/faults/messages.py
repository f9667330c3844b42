"""The message each corruption and untrusted-input case of tests/test_reliability.py gives, as a
Markdown table for docs/reliability.md:

    python -m tests.faults.messages
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from shardgraph.errors import ShardgraphError
from shardgraph.storage.checkpoint import CheckpointStore
from tests.test_reliability import DAMAGE, load_everything, make_pristine


def fresh(source: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    info = json.loads((target / "run/run.json").read_text())
    info["dataset"] = str(target / "ds")
    (target / "run/run.json").write_text(json.dumps(info))
    return target


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def main() -> None:
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        make_pristine(root / "p")
        rows: list[tuple[str, str]] = []

        def outcome(case: str, work: Path, action: Callable[[], object]) -> None:
            try:
                action()
                rows.append((case, "**not detected**"))
            except ShardgraphError as exc:
                rows.append((case, str(exc).replace(str(work) + "/", "")))

        for case, (locate, damage, _pattern) in DAMAGE.items():
            work = fresh(root / "p", root / "w")
            damage(locate(work))
            outcome(case, work, lambda w=work: load_everything(w))  # type: ignore[misc]

        untrusted: dict[str, Callable[[Path], object]] = {
            "bucket file ../../outside.npy": lambda w: edit_json(
                w / "ds/manifest.json", lambda m: m["splits"]["train"]["buckets"][0].update(file="../../outside.npy")),
            "partition file /etc/passwd": lambda w: edit_json(
                w / "run/checkpoint/manifest.json",
                lambda m: m["partitions"]["entity"]["0"].update(embeddings="/etc/passwd")),
            "bucket file is a symlink": lambda w: (
                shutil.move(w / "ds/edges/train/bucket_0_0.npy", w / "elsewhere.npy"),
                (w / "ds/edges/train/bucket_0_0.npy").symlink_to(w / "elsewhere.npy")),
            "entity type named ../../x": lambda w: edit_json(
                w / "ds/manifest.json",
                lambda m: m["entity_types"].__setitem__("../../x", m["entity_types"].pop("entity"))),
            "manifest claims 10^12 entities": lambda w: edit_json(
                w / "ds/manifest.json",
                lambda m: m["entity_types"]["entity"]["partition_counts"].__setitem__(0, 10**12)),
        }
        for case, damage in untrusted.items():
            work = fresh(root / "p", root / "w")
            damage(work)
            outcome(case, work, lambda w=work: load_everything(w))  # type: ignore[misc]

        work = fresh(root / "p", root / "w")
        edit_json(work / "run/checkpoint/manifest.json",
                  lambda m: m["partitions"]["entity"]["1"].update(rows=10**12))

        def huge_rows(w: Path = work) -> None:
            store = CheckpointStore(w / "run")
            store.load_partition(store.partition_files(store.manifest() or {}, "entity", 1), mmap=False)

        outcome("checkpoint claims 10^12 rows", work, huge_rows)
        work = fresh(root / "p", root / "w")
        (work / "evil").mkdir()

        class Payload:
            def __reduce__(self) -> tuple:
                return (Path.touch, (work / "pwned",))

        torch.save({"version": 1, "evil": Payload()}, work / "evil" / "model.pt")

        def sage(w: Path = work) -> None:
            from shardgraph.gnn.predict import SageModel

            SageModel(w / "evil")

        outcome("model.pt holding a pickled callable", work, sage)
        print("| case | message |\n|---|---|")
        for case, message in rows:
            print(f"| {case} | {message.replace('|', '/')} |")


if __name__ == "__main__":
    main()
