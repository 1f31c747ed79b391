"""One small object that owns every path under the storage root.

All writes go through :meth:`Storage.atomic_path`: data is written to a
temporary file in the same folder, fsynced, and renamed into place, then the
folder is fsynced, so neither a killed run nor a power cut leaves a file that
looks complete (a rename that reaches the disk before the data would publish
a zero-length file).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import polars as pl

_UMASK = os.umask(0)
os.umask(_UMASK)


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


def fsync_tree(folder: str | Path) -> None:
    """fsync every file and folder below ``folder`` (before the rename that publishes it)."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(dirpath)


class Storage:
    """Paths and atomic I/O under one storage root (``FRAUD_DATA_DIR``)."""

    def __init__(self, root: str | Path, landing_dir: str | Path | None = None):
        self.root = Path(root)
        self.landing_dir = Path(landing_dir) if landing_dir else self.root / "incoming"

    # ---- layout -----------------------------------------------------------
    def asset_path(self, asset: str, partition: str | None = None) -> Path:
        base = self.root / "assets" / asset
        return base / f"{partition}.parquet" if partition else base.with_suffix(".parquet")

    def quarantine_path(self, stage: str, partition: str) -> Path:
        return self.root / "quarantine" / stage / f"{partition}.parquet"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def embedding_cache_dir(self) -> Path:
        return self.root / "embedding_cache"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def production_model_dir(self) -> Path:
        return self.models_dir / "production"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    # ---- atomic writes ----------------------------------------------------
    @contextlib.contextmanager
    def atomic_path(self, path: str | Path) -> Iterator[Path]:
        """Yield a temporary path next to ``path``; rename it into place on success."""
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

    def write_parquet(self, df: pl.DataFrame, path: str | Path) -> Path:
        with self.atomic_path(path) as tmp:
            df.write_parquet(tmp)
        return Path(path)

    def write_json(self, obj: Any, path: str | Path) -> Path:
        return self.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), path)

    def write_text(self, text: str, path: str | Path) -> Path:
        return self.write_bytes(text.encode("utf-8"), path)

    def write_bytes(self, data: bytes, path: str | Path) -> Path:
        with self.atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return Path(path)

    @staticmethod
    def read_parquet(path: str | Path) -> pl.DataFrame:
        return pl.read_parquet(path)
