"""Calendar features of a message's timestamp, cyclically encoded.

Hour 23 and hour 0 are neighbours, as are Sunday and Monday, December and
January, the last and first day of a month: encoding each as (sin, cos) on a
circle lets a model see that, where the raw integers would put them far apart.
Everything is computed in one configured time zone (fraud campaigns follow
the victims' local clock, not UTC). Vectorised polars, no per-row Python.
"""

from __future__ import annotations

import math

import polars as pl

from fraud_assets.settings import DEFAULT_TIMEZONE

RAW_TIME_COLUMNS: list[str] = [
    "hour_of_day",  # 0-23
    "day_of_week",  # 0 = Monday .. 6 = Sunday
    "month_of_year",  # 1-12
    "day_of_month",  # 1-31
    "week_of_year",  # ISO 8601 week, 1-53
    "season_of_year",  # 0 winter (DJF), 1 spring (MAM), 2 summer (JJA), 3 autumn (SON)
]

CYCLIC_TIME_COLUMNS: list[str] = [
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "month_sin",
    "month_cos",
    "dom_sin",
    "dom_cos",
    "week_sin",
    "week_cos",
    "season_sin",
    "season_cos",
]

# The model inputs: cyclic encodings plus the missing-timestamp flag.
TIME_FEATURE_COLUMNS: list[str] = [*CYCLIC_TIME_COLUMNS, "has_timestamp"]

_TAU = 2.0 * math.pi


def _cyclic(prefix: str, position: pl.Expr, period: pl.Expr | float) -> list[pl.Expr]:
    """(sin, cos) of ``position / period`` turns; 0.0 where the timestamp is missing."""
    angle = position.cast(pl.Float64) * _TAU / period
    return [
        angle.sin().fill_null(0.0).cast(pl.Float32).alias(f"{prefix}_sin"),
        angle.cos().fill_null(0.0).cast(pl.Float32).alias(f"{prefix}_cos"),
    ]


def time_features(frame: pl.DataFrame, *, timezone: str = DEFAULT_TIMEZONE) -> pl.DataFrame:
    """The ``time_features`` table for ``frame`` (message_id, text_hash, sent_at).

    ``sent_at`` is a UTC datetime (naive values are read as UTC) and may be
    null. It is converted to ``timezone`` before any calendar field is taken,
    so "hour" means the local hour. Returns message_id, text_hash,
    has_timestamp, the Int8 raw columns (:data:`RAW_TIME_COLUMNS`, null where
    the timestamp is missing) and the Float32 cyclic columns (0.0 where it is
    missing), one row per input row in input order.

    Periods: hour 24, weekday 7, month 12 (month-1), day of month the length of
    that month ((day-1)/days, so the 31st sits next to the 1st), ISO week 53
    ((week-1)/53), season 4.
    """
    sent_at = pl.col("sent_at")
    dtype = frame.schema["sent_at"]
    if not isinstance(dtype, pl.Datetime):
        raise TypeError(f"sent_at must be a Datetime column, not {dtype}")
    if dtype.time_zone is None:
        sent_at = sent_at.dt.replace_time_zone("UTC")
    local = sent_at.dt.convert_time_zone(timezone)

    raw = frame.select(
        "message_id",
        "text_hash",
        pl.col("sent_at").is_not_null().alias("has_timestamp"),
        local.dt.hour().cast(pl.Int8).alias("hour_of_day"),
        (local.dt.weekday() - 1).cast(pl.Int8).alias("day_of_week"),  # polars: 1 = Monday
        local.dt.month().cast(pl.Int8).alias("month_of_year"),
        local.dt.day().cast(pl.Int8).alias("day_of_month"),
        local.dt.week().cast(pl.Int8).alias("week_of_year"),  # ISO 8601
        ((local.dt.month() % 12) // 3).cast(pl.Int8).alias("season_of_year"),
        local.dt.month_end().dt.day().alias("_days_in_month"),
    )
    return raw.with_columns(
        *_cyclic("hour", pl.col("hour_of_day"), 24.0),
        *_cyclic("dow", pl.col("day_of_week"), 7.0),
        *_cyclic("month", pl.col("month_of_year") - 1, 12.0),
        *_cyclic("dom", pl.col("day_of_month") - 1, pl.col("_days_in_month").cast(pl.Float64)),
        *_cyclic("week", pl.col("week_of_year") - 1, 53.0),
        *_cyclic("season", pl.col("season_of_year"), 4.0),
    ).drop("_days_in_month")
