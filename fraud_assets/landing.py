"""The landing folder: content-addressed partition keys and the file archive.

A partition key is ``<readable stem>-<first 12 hex of the content SHA-256>``,
so re-dropping an identical file (under any name) maps to an existing key and
does nothing, while a changed file becomes a new partition. On registration
the file is copied into ``<root>/archive/`` under its key: assets read the
archived copy, so a partition stays reproducible after the landing folder is
cleaned or the file is overwritten.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from fraud_assets.readers import SUPPORTED_SUFFIXES
from fraud_assets.storage import Storage

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_TEMPORARY = (".tmp", ".part", ".crdownload", ".partial", ".swp")


@dataclass(frozen=True)
class LandedFile:
    path: Path
    partition_key: str
    size: int


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def partition_key_for(path: Path, sha256: str | None = None) -> str:
    """Readable stem plus content hash, limited to characters Dagster keys accept."""
    stem = _UNSAFE.sub("_", path.stem).strip("._-")[:48] or "file"
    return f"{stem}-{(sha256 or content_hash(path))[:12]}"


def candidate_files(landing_dir: Path, *, settle_seconds: float = 0.0, now: float | None = None) -> list[Path]:
    """Files the sensor should look at: no hidden, temporary or still-changing files.

    Unsupported extensions are included on purpose: they become a whole-file
    quarantine record with a reason instead of being silently ignored.
    """
    if not landing_dir.is_dir():
        return []
    now = now if now is not None else dt.datetime.now().timestamp()
    out = []
    for path in sorted(landing_dir.iterdir()):
        if not path.is_file() or path.name.startswith((".", "~")) or path.name.endswith(_TEMPORARY):
            continue
        if settle_seconds and now - path.stat().st_mtime < settle_seconds:
            continue  # still being written by a non-atomic copy
        out.append(path)
    return out


def scan_landing(landing_dir: Path, *, settle_seconds: float = 0.0, known: dict[str, list] | None = None) -> list[LandedFile]:
    """Key every landed file; ``known`` maps path -> [size, mtime_ns, key] to skip re-hashing."""
    known = known or {}
    out = []
    for path in candidate_files(landing_dir, settle_seconds=settle_seconds):
        stat = path.stat()
        cached = known.get(str(path))
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            key = cached[2]
        else:
            key = partition_key_for(path)
        out.append(LandedFile(path, key, stat.st_size))
    return out


def archive_file(storage: Storage, landed: LandedFile) -> Path:
    """Copy a landed file into the archive under its key (idempotent, atomic)."""
    suffix = landed.path.suffix.lower() if landed.path.suffix.lower() in SUPPORTED_SUFFIXES else landed.path.suffix
    target = storage.root / "archive" / f"{landed.partition_key}{suffix}"
    manifest = target.with_name(f"{landed.partition_key}.json")
    if not target.exists():
        with storage.atomic_path(target) as tmp:
            shutil.copyfile(landed.path, tmp)
        if partition_key_for(landed.path, content_hash(target)) != landed.partition_key:
            target.unlink()
            raise RuntimeError(f"{landed.path} changed while it was being registered; it will be retried")
    if not manifest.exists():
        storage.write_json(
            {
                "partition_key": landed.partition_key,
                "original_name": landed.path.name,
                "original_path": str(landed.path),
                "size": landed.size,
                "registered_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            },
            manifest,
        )
    return target


def archived_file(storage: Storage, partition_key: str) -> tuple[Path, str]:
    """The archived file and its original name for a partition key."""
    folder = storage.root / "archive"
    manifest = folder / f"{partition_key}.json"
    if not manifest.exists():
        raise FileNotFoundError(
            f"partition {partition_key!r} has no archived file under {folder}; "
            "register files with the landing sensor or `fraud-assets ingest`"
        )
    meta = json.loads(manifest.read_text(encoding="utf-8"))
    matches = [p for p in folder.glob(f"{partition_key}*") if p.suffix != ".json" and p.stem == partition_key]
    if not matches:
        raise FileNotFoundError(f"archived file for partition {partition_key!r} is missing from {folder}")
    return matches[0], meta["original_name"]


def register_files(
    storage: Storage,
    existing_keys: set[str],
    *,
    settle_seconds: float = 0.0,
    known: dict[str, list] | None = None,
) -> tuple[list[LandedFile], list[LandedFile], dict[str, list]]:
    """Archive every landed file whose content is not registered yet.

    Keys are compared by their content-hash suffix, so the same bytes under
    another file name map to the partition that already holds them.

    Returns (new files, all landed files, cursor). The cursor maps each path
    to [size, mtime_ns, key] so unchanged files are not hashed again; the
    sensor keeps it between ticks. Used by the sensor and by
    ``fraud-assets ingest`` alike, so both register files the same way.
    """
    by_hash = {key.rsplit("-", 1)[-1]: key for key in sorted(existing_keys)}
    landed, new = [], []
    for item in scan_landing(storage.landing_dir, settle_seconds=settle_seconds, known=known):
        digest = item.partition_key.rsplit("-", 1)[-1]
        if digest in by_hash:  # same content already registered, possibly under another name
            known_item = LandedFile(item.path, by_hash[digest], item.size)
            archive_file(storage, known_item)  # no-op when archived; covers partitions added by hand
            landed.append(known_item)
            continue
        archive_file(storage, item)
        by_hash[digest] = item.partition_key
        landed.append(item)
        new.append(item)
    cursor = {str(f.path): [f.size, f.path.stat().st_mtime_ns, f.partition_key] for f in landed if f.path.exists()}
    return new, landed, cursor
