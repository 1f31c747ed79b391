"""The storage seam: every path, read, write, listing, copy and publish under the storage root.

The root (``FRAUD_DATA_DIR``) is a local folder or an fsspec URI
(``s3://bucket/prefix``, ``gs://...``, ``memory://...``) through
universal-pathlib; credentials come from each filesystem's usual environment
(``AWS_*`` for S3, ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS, ...). Local
roots use :class:`pathlib.Path`, so nothing changes for a single machine.

Publishing is atomic on every backend:

- local disk: write a temporary file in the same folder, fsync it, rename it
  into place, fsync the folder, so neither a killed run nor a power cut leaves
  a file that looks complete (a rename that reached the disk before the data
  would publish a zero-length file);
- object stores: one object is written in one PUT and becomes visible whole or
  not at all; a set of files is published by writing a small manifest or
  pointer object last (see ``fraud_assets.model.io``), never by renaming.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Union

import polars as pl

_UMASK = os.umask(0)
os.umask(_UMASK)

# A local Path or a universal-pathlib UPath; both offer the pathlib API used here.
StoragePath = Union[Path, Any]


def as_path(location: str | os.PathLike | StoragePath) -> StoragePath:
    """``Path`` for a local location (``file://`` included), ``UPath`` for any other URI."""
    if not is_local(location):
        return location  # already a UPath of a remote filesystem
    text = os.fspath(location)
    if "://" in text and not text.startswith("file://"):
        from upath import UPath

        return UPath(text)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return Path(text).expanduser()


def is_local(path: StoragePath) -> bool:
    """True for a path on this machine's file system (``pathlib.Path`` has no protocol)."""
    return getattr(path, "protocol", "") in ("", "file", "local")


def fsync_path(path: str | Path) -> None:
    """Flush a file's data, or a folder's entries, to disk (folders: where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):
        return  # Windows cannot open folders; nothing more can be done there
    try:
        os.fsync(fd)
    except OSError:
        if not Path(path).is_dir():
            raise  # some file systems refuse fsync on folders; data must still be flushed
    finally:
        os.close(fd)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a local file's bytes, as hex, read in blocks (model weights are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


class Storage:
    """Paths and atomic I/O under one storage root (``FRAUD_DATA_DIR``)."""

    def __init__(self, root: str | os.PathLike, landing_dir: str | os.PathLike | None = None):
        self.root = as_path(root)
        self.landing_dir = as_path(landing_dir) if landing_dir else self.root / "incoming"

    # ---- layout -----------------------------------------------------------
    def asset_path(self, asset: str, partition: str | None = None) -> StoragePath:
        base = self.root / "assets" / asset
        return base / f"{partition}.parquet" if partition else base.with_suffix(".parquet")

    def quarantine_path(self, stage: str, partition: str) -> StoragePath:
        return self.root / "quarantine" / stage / f"{partition}.parquet"

    @property
    def quarantine_dir(self) -> StoragePath:
        return self.root / "quarantine"

    @property
    def embedding_cache_dir(self) -> StoragePath:
        return self.root / "embedding_cache"

    @property
    def models_dir(self) -> StoragePath:
        return self.root / "models"

    @property
    def candidates_dir(self) -> StoragePath:
        """One folder per trained model, named by its training run (see fraud_assets.model.io)."""
        return self.models_dir / "candidates"

    @property
    def production_pointer(self) -> StoragePath:
        """The promoted model: a small JSON naming a candidate and its files' hashes."""
        return self.models_dir / "production.json"

    @property
    def tensorboard_dir(self) -> StoragePath:
        return self.root / "tensorboard"

    @property
    def reports_dir(self) -> StoragePath:
        return self.root / "reports"

    # ---- reads ------------------------------------------------------------
    @staticmethod
    def exists(path: StoragePath) -> bool:
        return path.exists()

    @staticmethod
    def read_bytes(path: StoragePath) -> bytes:
        return path.read_bytes()

    def read_json(self, path: StoragePath) -> Any:
        return json.loads(self.read_bytes(path))

    @staticmethod
    def read_parquet(path: StoragePath, columns: list[str] | None = None) -> pl.DataFrame:
        if is_local(path):
            return pl.read_parquet(path, columns=columns)
        with path.open("rb") as handle:
            return pl.read_parquet(handle, columns=columns)

    def scan_parquet(self, paths: Iterable[StoragePath]) -> pl.LazyFrame:
        """One lazy frame over several Parquet files (local: pushed-down scan; remote: read, then lazy)."""
        paths = list(paths)
        if all(is_local(p) for p in paths):
            return pl.scan_parquet([str(p) for p in paths])
        return pl.concat([self.read_parquet(p) for p in paths]).lazy()

    def height(self, path: StoragePath) -> int:
        """Row count of a Parquet file from its footer, 0 when it does not exist."""
        if not self.exists(path):
            return 0
        if is_local(path):
            return pl.scan_parquet(path).select(pl.len()).collect().item()
        import pyarrow.parquet as pq

        with path.open("rb") as handle:
            return pq.ParquetFile(handle).metadata.num_rows

    @staticmethod
    def glob(folder: StoragePath, pattern: str = "*") -> list[StoragePath]:
        """Files directly in ``folder`` matching ``pattern``, sorted by name; [] when it does not exist.

        Temporary files of an unfinished write (dot-prefixed) are never listed.
        """
        if not folder.exists():
            return []
        return sorted((p for p in folder.glob(pattern) if not p.name.startswith(".") and p.is_file()), key=lambda p: p.name)

    @staticmethod
    def subfolders(folder: StoragePath) -> list[StoragePath]:
        """Folders directly in ``folder``, sorted by name (none that start with a dot)."""
        if not folder.exists():
            return []
        return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)

    @contextlib.contextmanager
    def local_copy(self, path: StoragePath) -> Iterator[Path]:
        """A local file with the content of ``path``, for libraries that need one (itself when local)."""
        if is_local(path):
            yield Path(path)
            return
        with tempfile.TemporaryDirectory(prefix="fraud-assets-") as tmp:
            local = Path(tmp) / path.name
            with path.open("rb") as source, local.open("wb") as target:
                shutil.copyfileobj(source, target, 1 << 22)  # streamed: the file may be larger than memory
            yield local

    @contextlib.contextmanager
    def local_folder(self, folder: StoragePath) -> Iterator[Path]:
        """A local folder whose files end up under ``folder``: itself when local, else a
        temporary folder uploaded when the block ends (TensorBoard writes only local files)."""
        if is_local(folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
            yield Path(folder)
            return
        with tempfile.TemporaryDirectory(prefix="fraud-assets-") as tmp:
            yield Path(tmp)
            self.upload_tree(Path(tmp), folder)

    # ---- atomic writes ----------------------------------------------------
    @contextlib.contextmanager
    def atomic_path(self, path: StoragePath) -> Iterator[Path]:
        """Yield a local temporary path; on success its content is published at ``path`` atomically.

        Local: temporary file next to ``path``, fsync, rename, fsync the folder.
        Object store: the file is uploaded as one object after the block ends.
        """
        if not is_local(path):
            with tempfile.TemporaryDirectory(prefix="fraud-assets-") as tmp:
                staged = Path(tmp) / path.name
                yield staged
                path.parent.mkdir(parents=True, exist_ok=True)
                with staged.open("rb") as source, path.open("wb") as target:
                    shutil.copyfileobj(source, target, 1 << 22)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs are meant to be shared
        try:
            yield tmp_path
            fsync_path(tmp_path)
            os.replace(tmp_path, path)
            fsync_path(path.parent)
        finally:
            tmp_path.unlink(missing_ok=True)

    def write_parquet(self, df: pl.DataFrame, path: StoragePath) -> StoragePath:
        with self.atomic_path(path) as tmp:
            df.write_parquet(tmp)
        return path

    @contextlib.contextmanager
    def parquet_writer(self, path: StoragePath, schema: dict[str, pl.DataType]) -> Iterator[Callable[[pl.DataFrame], None]]:
        """Write one Parquet file batch by batch (a row group each), published atomically when the
        block ends, so memory holds one batch, never the whole file. Yields ``write(frame)``.

        Encoding and compression run on a background thread (pyarrow releases the GIL), overlapping
        the caller's work on the next batch; at most one batch waits, so memory stays bounded.
        """
        import pyarrow.parquet as pq

        arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema
        with (
            self.atomic_path(path) as tmp,
            pq.ParquetWriter(tmp, arrow_schema, compression="zstd", compression_level=1) as writer,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer") as pool,
        ):
            pending: list[Future] = []

            def write(frame: pl.DataFrame) -> None:
                if pending:
                    pending.pop().result()  # the previous batch is written (and its error raised) first
                if frame.height:
                    table = frame.select(list(schema)).cast(schema).to_arrow().cast(arrow_schema)
                    pending.append(pool.submit(writer.write_table, table))

            yield write
            if pending:
                pending.pop().result()

    def iter_parquet(self, path: StoragePath, batch_rows: int, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """A Parquet file as frames of at most ``batch_rows`` rows (of ``columns``, default all), read one at a time.

        Each frame is a slice read by polars, which decodes only the row groups the slice overlaps
        (:meth:`parquet_writer` writes one per batch). pyarrow's batch iterator holds about three
        times as much memory for the same frame (its own allocator's pages plus read-ahead).
        """
        with self.local_copy(path) as local:
            scan = pl.scan_parquet(local)
            frames = scan if columns is None else scan.select(columns)
            rows = scan.select(pl.len()).collect().item()
            for start in range(0, rows, batch_rows):
                yield frames.slice(start, batch_rows).collect()

    def write_json(self, obj: Any, path: StoragePath) -> StoragePath:
        return self.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), path)

    def write_text(self, text: str, path: StoragePath) -> StoragePath:
        return self.write_bytes(text.encode("utf-8"), path)

    def write_bytes(self, data: bytes, path: StoragePath) -> StoragePath:
        with self.atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return path

    def upload_tree(self, folder: Path, destination: StoragePath) -> StoragePath:
        """Copy every file under a local ``folder`` to ``destination`` (each file published atomically)."""
        for local in sorted(p for p in folder.rglob("*") if p.is_file()):
            with self.atomic_path(destination / local.relative_to(folder).as_posix()) as tmp:
                shutil.copyfile(local, tmp)
        return destination

    # ---- removal ----------------------------------------------------------
    @staticmethod
    def remove(path: StoragePath) -> None:
        """Delete one file; a missing file is not an error."""
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    @staticmethod
    def remove_tree(folder: StoragePath) -> None:
        """Delete a folder and everything in it; a missing folder is not an error."""
        if is_local(folder):
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.exists():
            folder.fs.rm(folder.path, recursive=True)
