"""Calendar edge cases of the time features: New Year, ISO weeks, leap day, DST, time zones."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import polars as pl
import pytest

from fraud_assets.time_features import RAW_TIME_COLUMNS, TIME_FEATURE_COLUMNS, time_features


def _frame(*stamps: datetime | None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "message_id": [f"m{i}" for i in range(len(stamps))],
            "text_hash": [f"h{i}" for i in range(len(stamps))],
            "sent_at": list(stamps),
        },
        schema={"message_id": pl.Utf8, "text_hash": pl.Utf8, "sent_at": pl.Datetime("us", "UTC")},
    )


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def _row(stamp: datetime, tz: str = "UTC") -> dict:
    return time_features(_frame(stamp), timezone=tz).row(0, named=True)


def test_contract_columns_dtypes_and_order():
    stamps = [_utc(2024, 5, 1, 10), None, _utc(2023, 1, 1), _utc(2022, 7, 4, 23)]
    out = time_features(_frame(*stamps))
    assert out.columns == ["message_id", "text_hash", "has_timestamp", *RAW_TIME_COLUMNS, *TIME_FEATURE_COLUMNS[:-1]]
    assert set(TIME_FEATURE_COLUMNS) <= set(out.columns) and len(TIME_FEATURE_COLUMNS) == 13
    assert out.schema["has_timestamp"] == pl.Boolean
    assert all(out.schema[c] == pl.Int8 for c in RAW_TIME_COLUMNS)
    assert all(out.schema[c] == pl.Float32 for c in TIME_FEATURE_COLUMNS if c != "has_timestamp")
    assert out["message_id"].to_list() == ["m0", "m1", "m2", "m3"]
    assert out["has_timestamp"].to_list() == [True, False, True, True]


def test_missing_timestamp_is_neutral():
    out = time_features(_frame(None, _utc(2024, 5, 1))).row(0, named=True)
    assert out["has_timestamp"] is False
    assert all(out[c] is None for c in RAW_TIME_COLUMNS)
    assert all(out[c] == 0.0 for c in TIME_FEATURE_COLUMNS if c != "has_timestamp")


@pytest.mark.parametrize(
    ("stamp", "week"),
    [
        (_utc(2020, 12, 31, 12), 53),
        (_utc(2021, 1, 3, 12), 53),
        (_utc(2021, 1, 4, 12), 1),
        (_utc(2024, 12, 30, 12), 1),  # ISO week 1 of 2025
    ],
)
def test_iso_week_across_new_year(stamp, week):
    row = _row(stamp)
    assert row["week_of_year"] == week
    assert row["week_sin"] == pytest.approx(math.sin(2 * math.pi * (week - 1) / 53), abs=1e-6)


def test_leap_day_and_day_of_month_wraps():
    leap = _row(_utc(2024, 2, 29, 12))
    assert (leap["day_of_month"], leap["month_of_year"], leap["season_of_year"]) == (29, 2, 0)
    # (day-1)/days_in_month: Feb 29 is the last step before Mar 1 closes the circle.
    assert leap["dom_sin"] == pytest.approx(math.sin(2 * math.pi * 28 / 29), abs=1e-6)
    first, last = _row(_utc(2024, 1, 1, 12)), _row(_utc(2024, 1, 31, 12))
    gap_end = math.dist((last["dom_sin"], last["dom_cos"]), (first["dom_sin"], first["dom_cos"]))
    mid, nxt = _row(_utc(2024, 1, 15, 12)), _row(_utc(2024, 1, 16, 12))
    gap_mid = math.dist((mid["dom_sin"], mid["dom_cos"]), (nxt["dom_sin"], nxt["dom_cos"]))
    assert gap_end == pytest.approx(gap_mid, rel=1e-4)  # the 31st neighbours the 1st


@pytest.mark.parametrize(
    ("stamp", "season"),
    [
        (_utc(2023, 11, 30, 12), 3),
        (_utc(2023, 12, 1, 12), 0),
        (_utc(2024, 2, 29, 12), 0),
        (_utc(2024, 3, 1, 12), 1),
        (_utc(2024, 5, 31, 12), 1),
        (_utc(2024, 6, 1, 12), 2),
        (_utc(2024, 8, 31, 12), 2),
        (_utc(2024, 9, 1, 12), 3),
    ],
)
def test_season_boundaries(stamp, season):
    assert _row(stamp)["season_of_year"] == season


def test_dst_switch_uses_local_hour():
    # US DST began 2024-03-10 07:00 UTC (02:00 EST -> 03:00 EDT).
    before = _row(_utc(2024, 3, 10, 6, 30), "America/New_York")
    after = _row(_utc(2024, 3, 10, 7, 30), "America/New_York")
    assert before["hour_of_day"] == 1 and after["hour_of_day"] == 3
    # Berlin fell back 2024-10-27 01:00 UTC (03:00 CEST -> 02:00 CET): two UTC hours, same local hour.
    first = _row(_utc(2024, 10, 27, 0, 30), "Europe/Berlin")
    second = _row(_utc(2024, 10, 27, 1, 30), "Europe/Berlin")
    assert first["hour_of_day"] == second["hour_of_day"] == 2


def test_local_midnight_differs_from_utc_midnight():
    utc_midnight = _row(_utc(2026, 1, 1, 0), "Asia/Shanghai")
    assert (utc_midnight["hour_of_day"], utc_midnight["day_of_month"], utc_midnight["month_of_year"]) == (8, 1, 1)

    eve = _row(_utc(2025, 12, 31, 16), "UTC")
    local = _row(_utc(2025, 12, 31, 16), "Asia/Shanghai")
    assert (eve["hour_of_day"], eve["day_of_week"], eve["month_of_year"], eve["week_of_year"]) == (16, 2, 12, 1)
    assert (local["hour_of_day"], local["day_of_week"], local["month_of_year"]) == (0, 3, 1)
    assert (local["day_of_month"], local["week_of_year"], local["season_of_year"]) == (1, 1, 0)
    assert local["hour_sin"] == pytest.approx(0.0, abs=1e-6) and local["hour_cos"] == pytest.approx(1.0)


def test_default_zone_is_shanghai_and_naive_means_utc():
    naive = pl.DataFrame(
        {"message_id": ["a"], "text_hash": ["h"], "sent_at": [datetime(2026, 1, 1, 0)]},
        schema_overrides={"sent_at": pl.Datetime("us")},
    )
    assert time_features(naive).row(0, named=True)["hour_of_day"] == 8


def test_cyclic_values_on_unit_circle():
    stamps = [_utc(2024, m, d, h) for m, d, h in [(1, 1, 0), (3, 15, 6), (6, 30, 12), (12, 31, 23)]]
    out = time_features(_frame(*stamps))
    for prefix in ("hour", "dow", "month", "dom", "week", "season"):
        radius = (out[f"{prefix}_sin"] ** 2 + out[f"{prefix}_cos"] ** 2).to_list()
        assert radius == pytest.approx([1.0] * 4, abs=1e-5)
    # Sunday (6) sits next to Monday (0) on the circle.
    sunday, monday = _row(_utc(2024, 6, 2, 12)), _row(_utc(2024, 6, 3, 12))
    assert (sunday["day_of_week"], monday["day_of_week"]) == (6, 0)
    assert math.dist((sunday["dow_sin"], sunday["dow_cos"]), (monday["dow_sin"], monday["dow_cos"])) < 0.9
