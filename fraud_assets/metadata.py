"""Helpers that turn plain results into Dagster metadata for the UI."""

from __future__ import annotations

import dagster as dg
import polars as pl

from fraud_assets.text import escape_markdown, inert


def label_balance(rows: pl.DataFrame | int, fraud: int | None = None) -> dict[str, float | int]:
    """Fraud and normal counts of a frame, or of ``rows`` rows of which ``fraud`` are fraud."""
    if isinstance(rows, pl.DataFrame):
        fraud = int(rows["label"].sum() or 0) if rows.height else 0
        rows = rows.height
    fraud = fraud or 0
    return {"fraud": fraud, "normal": rows - fraud, "fraud_share": round(fraud / rows, 4) if rows else 0.0}


def preview_markdown(frame: pl.DataFrame, columns: list[str], *, rows: int = 10, width: int = 80) -> str:
    """A small markdown table of input rows that renders as plain text.

    Every string cell (texts, ids, labels, reasons, raw records) has phone
    numbers, card numbers and URLs masked and every markdown/HTML character
    escaped, so input can never put an image, link or tag into the UI.
    """
    if frame.height == 0:
        return "_no rows_"
    lines = ["| " + " | ".join(escape_markdown(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for record in frame.head(rows).select(columns).iter_rows(named=True):
        cells = [
            inert(record[name], width)
            if frame.schema[name] == pl.Utf8
            else escape_markdown("" if record[name] is None else str(record[name]))
            for name in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_metadata(frame: pl.DataFrame, uri: object, *, partitioned: bool = False, rows: int | None = None) -> dict[str, object]:
    """The standard entries the Dagster catalog shows natively: row count (``rows``, else the frame's),
    column schema, URI."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])
    rows_key = "dagster/partition_row_count" if partitioned else "dagster/row_count"
    return {rows_key: frame.height if rows is None else rows, "dagster/column_schema": schema, "dagster/uri": str(uri)}
