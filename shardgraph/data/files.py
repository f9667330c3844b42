"""Where edge files live and how their bytes come out: local or remote paths, compressed or not.

A `Location` is a local path or a path on a pyarrow file system (`s3://`, `gs://`, `hdfs://`
through pyarrow's own file systems, anything else through fsspec, wrapped as a pyarrow file
system so the Parquet dataset reader sees one interface). Compression is recognised by the
file's first bytes, never by its name: gzip, bzip2, xz and zstd.
"""

from __future__ import annotations

import bz2
import fnmatch
import glob
import gzip
import lzma
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs

from shardgraph.errors import InputError

# magic number -> compression name
MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd")
# URI scheme -> the Python package that provides it to fsspec, named in the error when it is missing
FSSPEC_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "hdfs": "pyarrow (built with HDFS)",
                   "abfs": "adlfs", "az": "adlfs", "http": "aiohttp", "https": "aiohttp"}


def is_uri(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


@dataclass(frozen=True)
class Location:
    """A file or directory to read: local (`fs` None) or on a pyarrow file system."""

    text: str  # as the user gave it: what error messages name
    path: str
    fs: pafs.FileSystem | None = None

    @classmethod
    def of(cls, source: str | Path) -> Location:
        text = str(source)
        if isinstance(source, Path) or not is_uri(text):
            return cls(text, text.removeprefix("file://"))
        fs, path = remote_filesystem(text)
        return cls(text, path, fs)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def info(self) -> pafs.FileInfo:
        fs = self.fs or pafs.LocalFileSystem()
        try:
            return fs.get_file_info(self.path)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot be reached: {exc}", path=self.text) from None

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def size(self) -> int:
        return int(self.info().size or 0)

    def open(self) -> BinaryIO:
        """The file's content as bytes, decompressed when its first bytes say it is compressed."""
        return self.open_with_raw()[0]

    def open_with_raw(self) -> tuple[BinaryIO, BinaryIO]:
        """`open()`, and the raw file under it, whose tell() says how much of the file has been read."""
        if self.fs is None:
            raw: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by the caller)
        else:
            try:
                raw = self.fs.open_input_file(self.path)
            except (OSError, pa.ArrowException) as exc:
                raise InputError(f"cannot be opened: {exc}", path=self.text) from None
        head = raw.read(6)
        raw.seek(0)
        compression = next((name for magic, name in MAGIC.items() if head.startswith(magic)), None)
        return decompress(raw, compression, self.text), raw


def decompress(raw: BinaryIO, compression: str | None, where: str) -> BinaryIO:
    if compression is None:
        return raw
    if compression == "gzip":
        return gzip.open(raw, "rb")  # type: ignore[return-value]
    if compression == "bz2":
        return bz2.open(raw, "rb")  # type: ignore[return-value]
    if compression == "xz":
        return lzma.open(raw, "rb")  # type: ignore[return-value]
    if pa.Codec.is_available("zstd"):
        return pa.CompressedInputStream(raw, "zstd")
    try:
        import zstandard
    except ModuleNotFoundError:
        raise InputError("is zstd-compressed; reading it needs pyarrow with zstd or the zstandard package "
                         "(pip install zstandard)", path=where) from None
    return zstandard.ZstdDecompressor().stream_reader(raw)


def strip_compression_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def remote_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(file system, path on it) for a URI: pyarrow's file systems first, then fsspec's."""
    scheme = uri.split("://", 1)[0].lower()
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, ValueError):
        pass  # pyarrow was built without this file system, or does not know the scheme: try fsspec
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot be reached through pyarrow's {scheme} file system: {exc}", path=uri) from None
    package = FSSPEC_PACKAGES.get(scheme)
    needs = f"{package} (pip install {package.split()[0]})" if package else f"fsspec's support for {scheme}://"
    try:
        import fsspec
    except ModuleNotFoundError:
        raise InputError(f"is on {scheme}://, which needs fsspec and {needs}, or a pyarrow built with that file "
                         "system", path=uri) from None
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise InputError(f"is on {scheme}://, which needs {needs}: {exc}", path=uri) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def expand_glob(location: Location) -> list[Location]:
    """Files matching a glob pattern (`*`, `?`, `[`), sorted; the location itself when it has none."""
    if not any(c in location.path for c in "*?["):
        return [location]
    if location.fs is None:
        paths = sorted(glob.glob(location.path, recursive=True))
    else:
        base = location.path.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0].rsplit("/", 1)[0]
        infos: Any = location.fs.get_file_info(pafs.FileSelector(base, recursive=True))
        paths = sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, location.path))
    if not paths:
        raise InputError("matches no file", path=location.text)
    return [Location(p, p, location.fs) for p in paths]
