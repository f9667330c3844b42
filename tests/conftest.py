"""Shared fixtures: small real graphs shipped in tests/data, and helpers to write edge files."""

from __future__ import annotations

import os
import shutil
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import pytest

HERE = Path(__file__).parent
DATA = HERE / "data"
REPO = HERE.parent
FB15K237 = REPO / "data" / "fb15k-237"

os.environ.setdefault("OMP_NUM_THREADS", "2")


def kg_files(name: str) -> dict[str, Path]:
    """train/valid/test files of a small KG shipped in tests/data (nations, umls, kinship)."""
    root = DATA / name
    return {split: root / f"{split}.txt" for split in ("train", "valid", "test")}


def write_lines(path: Path, lines: Iterable[str], newline: str = "\n") -> Path:
    path.write_text("".join(line + newline for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def nations() -> dict[str, Path]:
    return kg_files("nations")


@pytest.fixture
def umls() -> dict[str, Path]:
    return kg_files("umls")


@pytest.fixture
def kinship() -> dict[str, Path]:
    return kg_files("kinship")


def require_built(module: str, built: bool) -> None:
    """Skip a test of a compiled extension where it cannot be built (no C compiler); where a compiler
    exists (CI has one) a missing build is a failure, not a skip."""
    if built:
        return
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) or os.environ.get("CI"):
        pytest.fail(f"{module} is not built although a C compiler ({compiler}) is present: "
                    "reinstall with `make install` and read the build log")
    pytest.skip(f"{module} is not built and there is no C compiler ({compiler}) to build it")


def require_kernels() -> None:
    """require_built for the training kernels (shardgraph._kernels)."""
    from shardgraph.utils.kernels import kernels

    require_built("shardgraph._kernels", kernels() is not None)


def shm_segments_of(pids: Iterable[int]) -> set[str]:
    """Names of the /dev/shm segments that the processes map (torch's shared tensors are unlinked
    at once, so they show only here, as "/dev/shm/torch_... (deleted)")."""
    names: set[str] = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                names.update(line.split("/dev/shm/", 1)[1].split()[0] for line in f if "/dev/shm/" in line)
        except OSError:  # the process is gone
            continue
    return names


def shm_segments_held(names: set[str]) -> set[str]:
    """The segments among `names` that still exist: a file in /dev/shm, or mapped by any process."""
    held = {name for name in names if (Path("/dev/shm") / name).exists()}
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    return held | (shm_segments_of(pids) & names)


class RecordingBar:
    """A stand-in for tqdm that records what a progress bar was told: its total, the sum of its updates
    and its stage texts (monkeypatch a module's `tqdm` with it; `RecordingBar.made` lists the bars)."""

    made: ClassVar[list[RecordingBar]] = []

    def __init__(self, total: float | None = None, disable: bool | None = None, **_: object) -> None:
        self.total, self.n, self.disable = total, 0.0, disable
        self.stages: list[str] = []
        RecordingBar.made.append(self)

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.stages.append(text)

    def close(self) -> None:
        pass

    def __enter__(self) -> RecordingBar:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
