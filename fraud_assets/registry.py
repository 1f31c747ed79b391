"""Model files: save and load a :class:`~fraud_assets.model.TrainedModel`.

A model folder holds three files:

- ``model.safetensors`` — every tensor of the module (weights plus the IDF and
  standardisation buffers). safetensors, never pickle: loading a model must
  not be able to execute code.
- ``model_config.json`` — TrainConfig, FeatureSpec, training history and best
  epoch: everything needed to rebuild the module before loading the tensors.
- ``model_card.json`` — what a person (or the promotion gate) reads: the
  caller's card (embedding model + fingerprint, threshold, metrics,
  partitions) merged with the feature config, code version and creation time.

Saving writes a sibling temporary folder and renames it into place, so a
killed save never leaves a half-written model at the target path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
CARD_FILE = "model_card.json"
FORMAT_VERSION = 2  # 2: linear part fitted first, blend / calibration buffers


class ModelLoadError(Exception):
    """A model folder is missing, incomplete or corrupt."""


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
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if out.returncode == 0:
            commit = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package_version": package_version, "git_commit": commit}


def save_model(model, folder: Path, card: dict) -> Path:
    """Write ``model`` to ``folder`` atomically and return ``folder``.

    ``card`` comes from the caller (embedding_model, embedding_fingerprint,
    threshold, metrics, partitions, ...); its keys win over the generated
    ones (feature_config, code_version, created_at, files).
    An existing ``folder`` is replaced as a whole.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format_version": str(FORMAT_VERSION)})
        config_doc = {
            "format_version": FORMAT_VERSION,
            "train_config": model.config.to_dict(),
            "feature_spec": model.spec.to_dict(),
            "best_epoch": model.best_epoch,
            "history": model.history,
            "selection": model.selection,
        }
        generated = {
            "feature_config": {"train_config": model.config.to_dict(), "feature_spec": model.spec.to_dict()},
            "best_epoch": model.best_epoch,
            "selection": model.selection,
            "code_version": code_version(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": {"weights": WEIGHTS_FILE, "config": CONFIG_FILE},
        }
        _write_json(tmp / CONFIG_FILE, config_doc)
        _write_json(tmp / CARD_FILE, {**generated, **card})
        _swap_into_place(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_model(folder: Path):
    """Rebuild a saved model: returns ``(TrainedModel, card)``.

    Raises :class:`ModelLoadError` naming the folder and the problem when the
    folder or a file is missing, JSON is invalid, or the weights are corrupt,
    truncated or do not fit the saved configuration.
    """
    from fraud_assets.model import FeatureSpec, TrainConfig, build_model

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    for name in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE):
        if not (folder / name).is_file():
            raise ModelLoadError(f"model folder {folder} is incomplete: {name} is missing")
    config_doc = _read_json(folder, CONFIG_FILE)
    card = _read_json(folder, CARD_FILE)
    if config_doc.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"model in {folder} has format version {config_doc.get('format_version')!r}; "
            f"this code reads version {FORMAT_VERSION}"
        )
    try:
        config = TrainConfig.from_dict(config_doc["train_config"])
        spec = FeatureSpec.from_dict(config_doc["feature_spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{folder / CONFIG_FILE} is not a valid model configuration: {exc!r}") from exc
    try:
        from safetensors.torch import load_file

        state = load_file(str(folder / WEIGHTS_FILE))
    except Exception as exc:  # safetensors raises its own error types for bad headers / short files
        raise ModelLoadError(f"model weights {folder / WEIGHTS_FILE} are corrupt or truncated: {exc}") from exc
    try:
        model = build_model(
            config, spec, state, history=config_doc.get("history"), best_epoch=int(config_doc.get("best_epoch", 0)),
            selection=config_doc.get("selection"),
        )
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"model weights in {folder} do not match its configuration: {exc}") from exc
    return model, card


# --------------------------------------------------------------------------- #
def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, default=str)
        fh.flush()
        os.fsync(fh.fileno())


def _read_json(folder: Path, name: str) -> dict:
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder / name} is unreadable or not valid JSON: {exc}") from exc


def _swap_into_place(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``; an existing folder is moved aside first.

    A directory cannot be replaced in one rename, so there is a moment when
    ``folder`` is absent, but never one where it holds a partial model.
    """
    if not folder.exists():
        os.replace(tmp, folder)
        return
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(folder, old)
    try:
        os.replace(tmp, folder)
    except OSError:
        os.replace(old, folder)  # put the previous model back
        raise
    shutil.rmtree(old, ignore_errors=True)
