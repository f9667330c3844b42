"""Paths read from manifests of run directories and datasets, which may come from anyone.

A manifest names its files relative to its own directory. A name that is absolute, climbs
out with `..`, or passes through a symbolic link could make a load read (or a garbage
collection delete) a file elsewhere, so such names are refused before anything is opened.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from shardgraph.errors import ShardgraphError


def member_path(root: Path, name: object, manifest: Path, error: type[ShardgraphError]) -> Path:
    """`root / name` for a file name read from `manifest`; `error` if the name could point outside root."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise error(f"{manifest} names the file {name!r}, which is not a relative path; the manifest is corrupt "
                    "or was edited.")
    relative = PurePosixPath(name)
    if relative.is_absolute() or any(part in ("..", "") for part in name.split("/")):
        raise error(f"{manifest} names the file {name!r}, outside its directory {root}; refused (a manifest may "
                    "only name files below its own directory).")
    path = root
    for part in relative.parts:
        path = path / part
        if path.is_symlink():
            raise error(f"{manifest} names the file {name!r}, and {path} is a symbolic link; refused (a manifest "
                        "may only name plain files below its own directory).")
    return path


def check_npy_size(path: Path, shape: tuple[int, ...], itemsize: int, error: type[ShardgraphError]) -> None:
    """Refuse an .npy file whose size cannot hold `shape` before anything of that shape is allocated
    (a manifest that claims 10^12 rows must fail on a stat, not in the allocator)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc.strerror}).") from None
    payload = itemsize
    for extent in shape:
        payload *= extent
    if size < payload:
        raise error(f"{path} is {size:,} bytes, too small for the {shape} array of {itemsize}-byte values the "
                    f"manifest claims ({payload:,} bytes); the file is truncated or the manifest is wrong.")
