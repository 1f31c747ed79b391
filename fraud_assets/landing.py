"""The landing folder: content-addressed partition keys and the file archive.

A partition key is ``<readable stem>-<first 12 hex of the content SHA-256>``,
so re-dropping an identical file (under any name) maps to an existing key and
does nothing, while a changed file becomes a new partition. On registration
the file is copied into ``<root>/archive/`` under its key: assets read the
archived copy, so a partition stays reproducible after the landing folder is
cleaned or the file is overwritten.

No single file can stop registration: each file is handled on its own, and a
problem becomes a :class:`LandingIssue` (skipped, retried next time, or
failed with a quarantine record) while every other file is registered.
Symbolic links and anything that is not a regular file are never opened.
Names that are not UTF-8, very long or hold control characters get a safe
key; the original name is kept in the manifest, bytes included.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import stat as statmod
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from fraud_assets.readers import COMPRESSED_SUFFIXES, QUARANTINE_SCHEMA, SUPPORTED_SUFFIXES
from fraud_assets.storage import Storage, file_sha256

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_TEMPORARY = (".tmp", ".part", ".crdownload", ".partial", ".swp")
INDEX_NAME = "_landing_index.json"
# <key>.manifest.json beside the archived <key><suffix>. Until stop 19 the manifest was <key>.json, which
# a landed .json file (a JSON array) shared with its own manifest: such files were overwritten and lost.
MANIFEST_SUFFIX = ".manifest.json"
MAX_NEW_FILES_PER_PASS = 200
TIME_BUDGET_SECONDS = 20.0


@dataclass(frozen=True)
class LandedFile:
    """A landed file and the partition holding its content (``duplicate_of``: registered under another name)."""

    path: Path
    partition_key: str
    size: int
    duplicate_of: str | None = None

    @property
    def name(self) -> str:
        return display_name(self.path.name)


@dataclass(frozen=True)
class LandingIssue:
    """A file that was not registered this time: ``skipped`` (never read), ``retry`` or ``failed``."""

    name: str
    status: str
    reason: str


@dataclass
class Registration:
    """What one pass over the landing folder did."""

    new: list[LandedFile] = field(default_factory=list)
    landed: list[LandedFile] = field(default_factory=list)
    issues: list[LandingIssue] = field(default_factory=list)
    deferred: int = 0  # new files left for the next pass (work per pass is bounded)
    unsettled: int = 0  # files still being written


def display_name(name: str) -> str:
    """A file name as printable text: undecodable bytes as \\xNN, control characters escaped."""
    text = name.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def partition_key_for(path: Path, sha256: str | None = None) -> str:
    """Readable stem plus content hash, limited to characters Dagster keys accept."""
    stem = _UNSAFE.sub("_", path.stem).strip("._-")[:48] or "file"
    return f"{stem}-{(sha256 or file_sha256(path))[:12]}"


def _archive_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in SUPPORTED_SUFFIXES:
        return suffix
    if suffix in COMPRESSED_SUFFIXES:  # the reader needs the type inside too: .csv.gz
        inner = path.with_suffix("").suffix.lower()
        return f"{inner}{suffix}" if inner in SUPPORTED_SUFFIXES else suffix
    safe = _UNSAFE.sub("_", suffix[1:])[:16]
    return f".{safe}" if safe else ""


def _ignored(name: str) -> bool:
    return name.startswith((".", "~")) or name.endswith(_TEMPORARY)


def candidate_files(landing_dir: Path, *, settle_seconds: float = 0.0, now: float | None = None) -> list[Path]:
    """Regular files the sensor should look at: no hidden, temporary, still-changing files or links.

    Unsupported extensions are included on purpose: they become a whole-file
    quarantine record with a reason instead of being silently ignored.
    """
    registration = Registration()
    return [path for path, _ in _scan(landing_dir, registration, settle_seconds, now)]


def _scan(landing_dir: Path, registration: Registration, settle_seconds: float, now: float | None):
    """(path, lstat) of each settled regular file, sorted by name; everything else noted in ``registration``."""
    if not landing_dir.is_dir():
        return []
    now = now if now is not None else time.time()
    out = []
    with os.scandir(landing_dir) as entries:
        for entry in entries:
            if _ignored(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as exc:  # vanished between listing and stat
                registration.issues.append(LandingIssue(display_name(entry.name), "retry", f"cannot stat: {exc.strerror}"))
                continue
            if statmod.S_ISLNK(info.st_mode):
                registration.issues.append(
                    LandingIssue(display_name(entry.name), "skipped", "symbolic link: not followed, its target is never read")
                )
            elif not statmod.S_ISREG(info.st_mode):
                kind = "a folder" if statmod.S_ISDIR(info.st_mode) else "not a regular file"
                registration.issues.append(
                    LandingIssue(display_name(entry.name), "skipped", f"{kind}: only regular files are read")
                )
            elif settle_seconds and now - info.st_mtime < settle_seconds:
                registration.unsettled += 1  # still being written by a non-atomic copy
            else:
                out.append((Path(entry.path), info))
    return sorted(out, key=lambda item: os.fsencode(item[0].name))


def _open_regular(path: Path, expected: os.stat_result) -> int:
    """Open without following links or blocking; the file must still be the one that was listed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    info = os.fstat(fd)
    if not statmod.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (expected.st_dev, expected.st_ino):
        os.close(fd)
        raise FileNotFoundError(f"{display_name(path.name)} was replaced while it was being registered")
    return fd


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while block := os.read(fd, 1 << 20):
        digest.update(block)
    return digest.hexdigest()


def _copy_fd(fd: int, target: Path, storage: Storage) -> str:
    """Copy an open file into ``target`` atomically (fsynced); returns the SHA-256 of what was copied."""
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    with storage.atomic_path(target) as tmp, tmp.open("wb") as out:
        while block := os.read(fd, 1 << 20):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def archive_file(storage: Storage, landed: LandedFile, *, fd: int | None = None) -> Path:
    """Copy a landed file into the archive under its key (idempotent, atomic) and write its manifest."""
    target = storage.root / "archive" / f"{landed.partition_key}{_archive_suffix(landed.path)}"
    manifest = target.with_name(f"{landed.partition_key}{MANIFEST_SUFFIX}")
    try:
        return archived_file(storage, landed.partition_key)[0]  # archived before, perhaps under another name
    except FileNotFoundError:
        pass
    own = fd is None
    if own:
        fd = _open_regular(landed.path, os.stat(landed.path, follow_symlinks=False))
    try:
        digest = _copy_fd(fd, target, storage)
    finally:
        if own:
            os.close(fd)
    if digest[:12] != landed.partition_key.rsplit("-", 1)[-1]:
        storage.remove(target)
        raise FileNotFoundError(f"{landed.name} changed while it was being registered; it will be retried")
    original = os.fsencode(landed.path.name)
    manifest_doc = {
        "partition_key": landed.partition_key,
        "original_name": display_name(landed.path.name),
        "original_name_hex": original.hex(),  # the exact bytes, whatever their encoding
        "original_path": display_name(str(landed.path)),
        "size": landed.size,
        "sha256": digest,
        "registered_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    storage.write_json(manifest_doc, manifest)
    return target


def _manifest(storage: Storage, folder: Path, partition_key: str) -> tuple[Path, dict] | None:
    """A partition's manifest and its document, or None before registration finished.

    The second name is the one of archives written before stop 19 (``<key>.json``); a landed
    .json file now archived under that name is data, not a manifest, and is told apart by content.
    """
    for path in (folder / f"{partition_key}{MANIFEST_SUFFIX}", folder / f"{partition_key}.json"):
        if not storage.exists(path):
            continue
        try:
            doc = storage.read_json(path)
        except ValueError:  # a landed .json file that is not even JSON
            continue
        if isinstance(doc, dict) and doc.get("partition_key") == partition_key and "sha256" in doc:
            return path, doc
    return None


def archived_file(storage: Storage, partition_key: str) -> tuple[Path, str]:
    """The archived file and its original name (printable) for a partition key."""
    folder = storage.root / "archive"
    found = _manifest(storage, folder, partition_key)
    if found is None:
        raise FileNotFoundError(
            f"partition {partition_key!r} has no archived file under {folder}; "
            "register files with the landing sensor or `fraud-assets ingest`"
        )
    manifest, meta = found
    matches = [
        p for p in storage.glob(folder, f"{partition_key}*") if _archives(p.name, partition_key) and p.name != manifest.name
    ]
    if not matches:
        raise FileNotFoundError(f"archived file for partition {partition_key!r} is missing from {folder}")
    return matches[0], meta["original_name"]


def registered_name(storage: Storage, partition_key: str) -> bytes | None:
    """The exact name (bytes) a partition was registered under, from its manifest; None without one."""
    found = _manifest(storage, storage.root / "archive", partition_key)
    if found is None:
        return None
    meta = found[1]
    exact = meta.get("original_name_hex")
    if isinstance(exact, str):
        return bytes.fromhex(exact)
    return os.fsencode(meta["original_name"]) if isinstance(meta.get("original_name"), str) else None


def _archives(name: str, partition_key: str) -> bool:
    """Whether an archive file name holds the data of ``partition_key``: the key and its
    :func:`_archive_suffix` (one suffix, or a type plus a compression suffix), not its manifest."""
    if not name.startswith(partition_key):
        return False
    parts = name[len(partition_key) :].split(".")  # "" | ".csv" | ".csv.gz" -> [""], ["", "csv"], ["", "csv", "gz"]
    if len(parts) == 3 and f".{parts[2].lower()}" in COMPRESSED_SUFFIXES:
        parts = parts[:2]
    return parts == [""] or (len(parts) == 2 and parts[0] == "")


def _index_path(storage: Storage) -> Path:
    return storage.root / "archive" / INDEX_NAME


def load_index(storage: Storage) -> dict[str, list]:
    """name -> [size, mtime_ns, partition key]: files already keyed, so they are not hashed again."""
    try:
        data = storage.read_json(_index_path(storage))
    except (OSError, ValueError):
        return {}  # no index yet, or a damaged one: files are hashed again, nothing is lost
    if not isinstance(data, dict):
        return {}
    return {
        name: entry for name, entry in data.items() if isinstance(entry, list) and len(entry) == 4 and isinstance(entry[2], str)
    }


def _save_index(storage: Storage, index: dict[str, list]) -> None:
    # ensure_ascii keeps names with undecodable bytes (lone surrogates) exact and the file plain ASCII
    storage.write_text(json.dumps(index, ensure_ascii=True, separators=(",", ":")), _index_path(storage))


def landing_quarantine_path(storage: Storage, name: str) -> Path:
    digest = hashlib.blake2b(os.fsencode(name), digest_size=6).hexdigest()
    return storage.quarantine_path("landing", f"{partition_key_for(Path(name), digest)}")


def _quarantine_file(storage: Storage, name: str, reason: str) -> None:
    record = {"source_file": display_name(name), "source_row": None, "stage": "landing", "reason": reason, "raw": ""}
    storage.write_parquet(pl.DataFrame([record], schema=QUARANTINE_SCHEMA), landing_quarantine_path(storage, name))


def register_files(
    storage: Storage,
    existing_keys: set[str],
    *,
    settle_seconds: float = 0.0,
    max_new_files: int = MAX_NEW_FILES_PER_PASS,
    time_budget: float = TIME_BUDGET_SECONDS,
) -> Registration:
    """Archive every landed file whose content is not registered yet, each file on its own.

    Keys are compared by their content-hash suffix, so the same bytes under
    another file name are reported as a duplicate of the partition that holds
    them. Work per pass is bounded (``max_new_files`` files hashed, or
    ``time_budget`` seconds): the rest is counted in ``deferred`` and taken up
    by the next pass. A per-name index under the archive remembers (size,
    mtime) -> key, so unchanged files are never hashed twice and no per-file
    state needs to live in the sensor cursor. Used by the sensor and by
    ``fraud-assets ingest`` alike.
    """
    by_hash = {key.rsplit("-", 1)[-1]: key for key in sorted(existing_keys)}
    index, registration, started, hashed = load_index(storage), Registration(), time.monotonic(), 0
    seen: dict[str, list] = {}
    added: set[str] = set()  # keys new in this pass: each added once, however many names hold its bytes
    for path, info in _scan(storage.landing_dir, registration, settle_seconds, None):
        cached = index.get(path.name)
        if cached and cached[:2] == [info.st_size, info.st_mtime_ns] and cached[2].rsplit("-", 1)[-1] in by_hash:
            key = by_hash[cached[2].rsplit("-", 1)[-1]]
            registration.landed.append(LandedFile(path, key, info.st_size, key if cached[3] else None))
            seen[path.name] = cached
            continue
        if hashed >= max_new_files or time.monotonic() - started > time_budget:
            registration.deferred += 1
            continue
        hashed += 1
        try:
            item = _register_one(storage, path, info, by_hash)
        except OSError as exc:  # vanished, replaced, unreadable right now: try again next pass
            registration.issues.append(LandingIssue(display_name(path.name), "retry", f"{type(exc).__name__}: {exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - one file must never stop the others
            reason = f"registration failed: {type(exc).__name__}: {exc}"
            registration.issues.append(LandingIssue(display_name(path.name), "failed", reason))
            _quarantine_file(storage, path.name, reason)
            continue
        if item.duplicate_of is None and item.partition_key not in existing_keys:
            if item.partition_key in added:  # same bytes under a name that cleans to the same key (x.csv, x.CSV)
                item = dataclasses.replace(item, duplicate_of=item.partition_key)
            else:
                added.add(item.partition_key)
                registration.new.append(item)
        registration.landed.append(item)
        seen[path.name] = [info.st_size, info.st_mtime_ns, item.partition_key, item.duplicate_of is not None]
    if seen != index:
        _save_index(storage, seen)  # names no longer in the folder drop out: bounded by the folder
    return registration


def _register_one(storage: Storage, path: Path, info: os.stat_result, by_hash: dict[str, str]) -> LandedFile:
    fd = _open_regular(path, info)
    try:
        digest = _hash_fd(fd)
        key = partition_key_for(path, digest)
        known = by_hash.get(digest[:12])
        # same content already registered under another name: a duplicate of that partition, not a new one
        item = LandedFile(path, known or key, info.st_size, known if known not in (None, key) else None)
        archive_file(storage, item, fd=fd)  # a no-op when archived; covers partitions added by hand
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (info.st_size, info.st_mtime_ns):
            raise FileNotFoundError(f"{item.name} changed while it was being registered; it will be retried")
    finally:
        os.close(fd)
    by_hash.setdefault(digest[:12], item.partition_key)
    return item
