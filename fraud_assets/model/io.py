"""Model files and the model registry, on any storage root.

A model is a folder of three files:

- ``model.safetensors`` — every tensor of the module (weights plus the IDF and
  standardisation buffers). safetensors, never pickle: loading a model must
  not be able to execute code.
- ``model_config.json`` — TrainConfig, FeatureSpec, training history and best
  epoch: everything needed to rebuild the module before loading the tensors.
- ``model_card.json`` — what a person (or the promotion gate) reads: the
  caller's card (embedding model + fingerprint, threshold, metrics,
  partitions) merged with the feature config, code version and creation time.

The registry under ``<root>/models/``:

- ``candidates/<run name>/`` — one folder per training run, written by that run
  only (its evaluation completes the card before anything can promote it);
  the weights and config are written first and the card last, so a folder
  without a card is an unfinished save and never loads.
- ``production.json`` — the pointer: the promoted candidate and the SHA-256
  of each of its files, replaced in one atomic write. :func:`load_model` reads
  the pointer once, then only the files it names, and checks their hashes, so
  a reader racing a promotion gets the old model or the new one, whole, and
  never one model's threshold with another's weights.
- :func:`prune_candidates` removes old candidates, keeping the newest
  ``FRAUD_KEEP_MODELS`` (default 10) and every model a pointer names.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from fraud_assets.model.config import FeatureSpec, TrainConfig
from fraud_assets.model.trained import build_model
from fraud_assets.settings import keep_models
from fraud_assets.storage import Storage, StoragePath, as_path

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
CARD_FILE = "model_card.json"
MODEL_FILES = (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE)
# 2: linear part fitted first, blend / calibration buffers; 3: the dense part; 4: word x time-of-day
# crosses in the feature spec (code that reads 3 would score a 4 without its crosses, so it must refuse it)
FORMAT_VERSION = 4
# Versions this code loads. A version 2 model has no dense part: its buffers are added as a part with
# weight 0, so it scores exactly as before (a champion trained before the upgrade keeps working). A
# version 3 model has no crosses (its spec lacks ``cross_hour_block``, read as 0) and loads as it is.
READABLE_VERSIONS = (2, 3, 4)
POINTER_VERSION = 1


class ModelLoadError(Exception):
    """A model folder or pointer is missing, incomplete or corrupt."""


def code_version() -> dict[str, str | None]:
    """Package version and git commit (None where unavailable)."""
    from importlib.metadata import PackageNotFoundError, version

    package_version = None
    for name in ("fraud-assets", "fraud_assets"):
        try:
            package_version = version(name)
            break
        except PackageNotFoundError:
            continue
    commit = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        commit = out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package_version": package_version, "git_commit": commit}


# --------------------------------------------------------------------------- #
# model folders
# --------------------------------------------------------------------------- #
def save_model(model, folder: str | StoragePath, card: dict) -> StoragePath:
    """Write ``model`` into ``folder`` (weights and config first, the card last) and return ``folder``.

    ``card`` comes from the caller (embedding_model, embedding_fingerprint,
    threshold, metrics, partitions, ...); its keys win over the generated ones
    (feature_config, code_version, created_at, files). Each file is published
    atomically; the card, written last, marks the folder complete.
    """
    from safetensors.torch import save

    folder = as_path(folder)
    storage = Storage(folder)
    storage.remove(folder / CARD_FILE)  # an overwritten folder is incomplete until its new card lands
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
    storage.write_bytes(save(tensors, metadata={"format_version": str(FORMAT_VERSION)}), folder / WEIGHTS_FILE)
    config_doc = {
        "format_version": FORMAT_VERSION,
        "train_config": model.config.to_dict(),
        "feature_spec": model.spec.to_dict(),
        "best_epoch": model.best_epoch,
        "history": model.history,
    }
    if model.held_out_validation is not None:  # optional: readers of version 3 without it ignore it
        config_doc["held_out_validation"] = model.held_out_validation
    generated = {
        "feature_config": {"train_config": model.config.to_dict(), "feature_spec": model.spec.to_dict()},
        "best_epoch": model.best_epoch,
        "code_version": code_version(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {"weights": WEIGHTS_FILE, "config": CONFIG_FILE},
    }
    storage.write_bytes(_json_bytes(config_doc), folder / CONFIG_FILE)
    storage.write_bytes(_json_bytes({**generated, **card}), folder / CARD_FILE)
    return folder


def update_card(folder: str | StoragePath, **fields: Any) -> dict:
    """Add fields (threshold, metrics) to a candidate's card, atomically; returns the new card.

    Only the run that trained a candidate calls this, before promotion: the
    pointer then pins the card's hash.
    """
    folder = as_path(folder)
    card = {**read_card(folder), **fields}
    Storage(folder).write_bytes(_json_bytes(card), folder / CARD_FILE)
    return card


def read_card(folder: str | StoragePath) -> dict:
    """A model folder's card alone, without building the model (it needs no torch)."""
    path = as_path(folder) / CARD_FILE
    try:
        data = Storage(path).read_bytes(path)
    except FileNotFoundError:
        raise ModelLoadError(f"model folder {folder} has no {CARD_FILE}: missing or unfinished") from None
    return _parse_json(data, path)


def load_model(location: str | StoragePath):
    """Rebuild a saved model: ``(TrainedModel, card)``.

    ``location`` is a model folder or a pointer file (``production.json``).
    Raises :class:`ModelLoadError` naming the place and the problem when a
    file is missing, JSON is invalid, a hash does not match the pointer, or
    the weights are corrupt, truncated or do not fit the saved configuration.
    """
    location = as_path(location)
    files = _read_pointed_files(location) if location.name.endswith(".json") else _read_folder(location)
    return _build(files, location)


def model_files_digest(folder: str | StoragePath) -> dict[str, str]:
    """SHA-256 of each model file in ``folder``."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in _read_folder(as_path(folder)).items()}


# --------------------------------------------------------------------------- #
# the production pointer
# --------------------------------------------------------------------------- #
def read_pointer(pointer: str | StoragePath) -> dict | None:
    """The pointer document, or None when nothing was promoted yet."""
    data = read_pointer_bytes(pointer)
    return None if data is None else _parse_json(data, as_path(pointer))


def read_pointer_bytes(pointer: str | StoragePath) -> bytes | None:
    """The pointer file's bytes (None when nothing was promoted): what changes with every promotion."""
    pointer = as_path(pointer)
    try:
        return Storage(pointer).read_bytes(pointer)
    except FileNotFoundError:
        return None


def is_promoted(candidate: str | StoragePath, pointer: str | StoragePath) -> bool:
    """Whether ``pointer`` names ``candidate`` (an unreadable pointer names nothing)."""
    pointer = as_path(pointer)
    try:
        document = read_pointer(pointer)
    except ModelLoadError:
        return False
    return bool(document) and str(pointer.parent / str(document.get("model"))) == str(as_path(candidate))


def promote(candidate: str | StoragePath, pointer: str | StoragePath) -> dict:
    """Point ``pointer`` at ``candidate`` in one atomic write; returns the new pointer document.

    The candidate must sit next to the pointer's folder (``models/candidates/<run>``);
    the pointer stores its path relative to that folder, so the whole
    registry can be moved or mirrored. An unreadable pointer is replaced
    (``previous`` None, ``replaced_unreadable`` says why): the promotion gate
    already decided to replace a champion that cannot be loaded, and refusing
    here would make every later retrain fail on the same broken file.
    """
    candidate, pointer = as_path(candidate), as_path(pointer)
    try:
        previous, unreadable = read_pointer(pointer), None
    except ModelLoadError as exc:
        previous, unreadable = None, str(exc)
    document = {
        "pointer_version": POINTER_VERSION,
        "model": _relative(candidate, pointer),
        "files": model_files_digest(candidate),
        "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "previous": previous.get("model") if previous else None,
    }
    if unreadable:
        document["replaced_unreadable"] = unreadable
    Storage(pointer).write_bytes(_json_bytes(document), pointer)
    return document


# Candidate folders are named by their run's UTC start time, then the run id (``20260101T020000Z-1a2b3c4d``):
# name order is age order, which pruning relies on.
RUN_TIME_FORMAT = "%Y%m%dT%H%M%SZ"

# How long a candidate newer than the promoted model is kept whatever ``keep`` says: the run that
# trained it may still be evaluating it. After that it was judged (and refused), or its run died.
EVALUATION_GRACE = timedelta(days=2)


def prune_candidates(
    candidates_dir: str | StoragePath, pointer: str | StoragePath, *, keep: int | None = None, now: datetime | None = None
) -> list[str]:
    """Remove all but the newest ``keep`` candidates (``FRAUD_KEEP_MODELS``, default 10).

    Never removes the promoted model, the one it replaced (a rollback
    target), or a candidate newer than the promoted one that is younger than
    :data:`EVALUATION_GRACE` (another retrain may still be evaluating it; older
    ones were refused, so a streak of refusals does not fill the disk).
    Candidate names start with their run's UTC start time (``20260101T020000Z-...``),
    so name order is age order; a name without one is never removed. Returns the names removed.
    """
    keep = keep_models() if keep is None else keep
    candidates_dir, pointer = as_path(candidates_dir), as_path(pointer)
    storage = Storage(candidates_dir)
    document = read_pointer(pointer) or {}
    protected = {Path(str(document.get(k) or "")).name for k in ("model", "previous")}
    promoted = Path(str(document.get("model") or "")).name
    cutoff = ((now or datetime.now(timezone.utc)) - EVALUATION_GRACE).strftime(RUN_TIME_FORMAT)
    folders = storage.subfolders(candidates_dir)
    removed = [
        p.name
        for p in folders[: max(len(folders) - keep, 0)]
        if p.name not in protected and _started(p.name) and (p.name < promoted or p.name < cutoff)
    ]
    for name in removed:
        storage.remove_tree(candidates_dir / name)
    return removed


def _started(name: str) -> bool:
    """Whether a candidate's name starts with a run start time as :func:`prune_candidates` compares them."""
    try:
        datetime.strptime(name[:16], RUN_TIME_FORMAT)  # 16: the length of such a time
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- #
def _relative(candidate: StoragePath, pointer: StoragePath) -> str:
    base = str(pointer.parent).rstrip("/") + "/"
    text = str(candidate)
    if not text.startswith(base):
        raise ValueError(f"candidate {candidate} is not inside {pointer.parent}")
    return text[len(base) :]


def _read_folder(folder: StoragePath) -> dict[str, bytes]:
    storage = Storage(folder)
    if not storage.exists(folder / CARD_FILE):
        if not storage.exists(folder):
            raise ModelLoadError(f"model folder {folder} does not exist")
        raise ModelLoadError(f"model folder {folder} is incomplete: {CARD_FILE} is missing")
    files = {}
    for name in MODEL_FILES:
        try:
            files[name] = storage.read_bytes(folder / name)
        except FileNotFoundError:
            raise ModelLoadError(f"model folder {folder} is incomplete: {name} is missing") from None
    return files


def _read_pointed_files(pointer: StoragePath) -> dict[str, bytes]:
    document = read_pointer(pointer)
    if document is None:
        raise ModelLoadError(f"no model was promoted yet: {pointer} does not exist")
    try:
        folder, expected = pointer.parent / document["model"], dict(document["files"])
    except (KeyError, TypeError) as exc:
        raise ModelLoadError(f"{pointer} is not a model pointer: {exc!r}") from None
    files = _read_folder(folder)
    for name, data in files.items():
        if hashlib.sha256(data).hexdigest() != expected.get(name):
            raise ModelLoadError(
                f"{folder / name} does not match the hash recorded in {pointer}: the promoted model was modified"
            )
    return files


def _build(files: dict[str, bytes], where: StoragePath):
    config_doc = _parse_json(files[CONFIG_FILE], f"{where}: {CONFIG_FILE}")
    card = _parse_json(files[CARD_FILE], f"{where}: {CARD_FILE}")
    version = config_doc.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ModelLoadError(
            f"model in {where} has format version {version!r}; this code reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    try:
        config = TrainConfig.from_dict(config_doc["train_config"])
        spec = FeatureSpec.from_dict(config_doc["feature_spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{where}: {CONFIG_FILE} is not a valid model configuration: {exc!r}") from exc
    try:
        from safetensors.torch import load

        state = load(files[WEIGHTS_FILE])
    except Exception as exc:  # safetensors raises its own error types for bad headers / short files
        raise ModelLoadError(f"model weights in {where} are corrupt or truncated: {exc}") from exc
    if version == 2:
        state = _without_dense_part(state, spec)
    try:
        model = build_model(
            config,
            spec,
            state,
            history=config_doc.get("history"),
            best_epoch=int(config_doc.get("best_epoch", 0)),
            selection=card.get("selection"),
            held_out_validation=config_doc.get("held_out_validation"),
        )
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"model weights in {where} do not match its configuration: {exc}") from exc
    return model, card


def _without_dense_part(state: dict, spec: FeatureSpec) -> dict:
    """A version 2 state with the dense part's buffers added at weight 0 (the model scores as before)."""
    import torch

    added = {"dense_blend": torch.zeros(1)}
    if spec.dense_dim:
        added.update(dense_weight=torch.zeros(spec.dense_dim), dense_bias=torch.zeros(1))
    return {**added, **state}


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode("utf-8")


def _parse_json(data: bytes, where: object) -> dict:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ModelLoadError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelLoadError(f"{where} is not a JSON object")
    return document
