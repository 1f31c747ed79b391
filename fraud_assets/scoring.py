"""Score a file of messages with a saved model (the production model by default)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import polars as pl

from fraud_assets.features import FeatureUnavailable, ServingContext, serving_features
from fraud_assets.readers import IngestConfig, read_messages, stable_message_id
from fraud_assets.settings import Settings
from fraud_assets.storage import Storage
from fraud_assets.text import normalize_texts, text_hashes

OUTPUT_SUFFIXES = (".csv", ".jsonl", ".parquet")
REQUIRED_CARD_FIELDS = ("embedding_model", "embedding_fingerprint", "threshold")


class ScoringError(Exception):
    """A clear, user-facing reason why scoring cannot run."""


def score_file(input_path: Path, output_path: Path, *, model_dir: str | Path, settings: Settings | None = None) -> dict[str, Any]:
    """Score every message in ``input_path``; write probability and label to ``output_path``.

    Every input record gets one output row, in input order: a record that
    cannot be scored (unparseable timestamp, malformed line, empty text) keeps
    its row with an empty probability and label and a ``reason``.

    The embedding model, its settings and the decision threshold come from the
    model card, and the embedder's fingerprint must match the one the model was
    trained with, so scores are never computed on vectors from another model.
    Vectors are shared with the training cache under the storage root.
    """
    settings = settings or Settings.from_env()
    _check_paths(input_path, output_path)
    model, card = _load_scoring_model(model_dir)
    serving = ServingContext(settings=settings, card=card)

    # naive timestamps are read, and time features computed, in the zone the model was trained in
    parsed = read_messages(input_path, IngestConfig.load(settings.ingest_config), timezone=serving.timezone, require_label=False)
    if parsed.error:
        raise ScoringError(f"cannot read {input_path}: {parsed.error}")
    rows = parsed.rows.with_columns(normalize_texts(parsed.rows["text"].fill_null("")).alias("norm"))
    unscored = _unscored_rows(parsed, rows.filter(pl.col("norm") == ""))
    rows = rows.filter(pl.col("norm") != "")
    rows = rows.with_columns(text_hashes(rows["norm"]))

    started = time.perf_counter()
    messages = rows.select("message_id", "text_hash", pl.col("norm").alias("text"), "sent_at")
    try:
        features = serving_features(messages, serving)
    except FeatureUnavailable as exc:
        raise ScoringError(str(exc)) from None
    probability = model.predict_proba(features) if rows.height else []
    seconds = time.perf_counter() - started

    threshold = float(card["threshold"])
    scored = (
        rows.select("message_id", "source_row", "sent_at", "text")
        .with_columns(
            pl.Series("probability", probability, dtype=pl.Float64),
        )
        .with_columns((pl.col("probability") >= threshold).cast(pl.Int8).alias("label"), pl.lit(None, pl.Utf8).alias("reason"))
    )
    out = pl.concat([scored, unscored.select(scored.columns).cast(scored.schema)]).sort("source_row")
    _write(out, output_path)
    return {
        "input": str(input_path),
        "output": str(output_path),
        "rows_read": out.height,
        "scored": scored.height,
        "not_scored": unscored.height,
        "flagged_fraud": int(scored["label"].sum() or 0),
        "threshold": threshold,
        "model": card.get("run_name"),
        "seconds": round(seconds, 3),
        "messages_per_s": round(out.height / seconds, 1) if seconds > 0 else None,
    }


def _check_paths(input_path: Path, output_path: Path) -> None:
    """Refuse an output that cannot or must not be written before any scoring work.

    Writing over the input would destroy the messages being scored, and a
    folder as the output failed only at the end, after all the work.
    """
    if output_path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ScoringError(f"output must end in one of {OUTPUT_SUFFIXES}, not {output_path.name!r}")
    if not input_path.exists():
        raise ScoringError(f"input file {input_path} does not exist")
    if output_path.is_dir():
        raise ScoringError(f"output {output_path} is a folder; give a file name ending in one of {OUTPUT_SUFFIXES}")
    if output_path.resolve() == input_path.resolve() or (output_path.exists() and os.path.samefile(output_path, input_path)):
        raise ScoringError(f"output {output_path} is the input file: writing it would overwrite the messages being scored")


def _load_scoring_model(model_dir: str | Path):
    """The model and its card, refusing a card that lacks what scoring needs (never evaluated, foreign)."""
    from fraud_assets.model.io import ModelLoadError, load_model

    try:
        model, card = load_model(model_dir)
    except ModelLoadError as exc:
        raise ScoringError(f"{exc}. Train and promote a model first with `fraud-assets run` or `fraud-assets retrain`.") from exc
    if "threshold" not in card:
        raise ScoringError(f"model card in {model_dir} has no threshold: the model was never evaluated")
    missing = [name for name in REQUIRED_CARD_FIELDS if name not in card]
    if missing:
        raise ScoringError(
            f"model card of {model_dir} lacks the field(s) {missing}: it was not written by this project's training"
        )
    try:
        float(card["threshold"])
    except (TypeError, ValueError):
        raise ScoringError(f"model card in {model_dir}: threshold must be a number, not {card['threshold']!r}") from None
    return model, card


def _unscored_rows(parsed, empty: pl.DataFrame) -> pl.DataFrame:
    """Rows that cannot be scored, kept in the output with an empty probability and the reason."""
    columns = {
        "message_id": pl.Utf8,
        "source_row": pl.Int64,
        "sent_at": pl.Datetime("us", "UTC"),
        "text": pl.Utf8,
        "probability": pl.Float64,
        "label": pl.Int8,
        "reason": pl.Utf8,
    }
    empty_text = empty.select(
        "message_id",
        "source_row",
        "sent_at",
        "text",
        pl.lit(None, pl.Float64).alias("probability"),
        pl.lit(None, pl.Int8).alias("label"),
        pl.lit("text: missing or empty").alias("reason"),
    )
    unparsed = parsed.quarantine.select(
        pl.struct("source_file", "source_row")
        .map_elements(lambda r: stable_message_id(r["source_file"], r["source_row"]), return_dtype=pl.Utf8)
        .alias("message_id"),
        "source_row",
        pl.lit(None, pl.Datetime("us", "UTC")).alias("sent_at"),
        pl.lit(None, pl.Utf8).alias("text"),
        pl.lit(None, pl.Float64).alias("probability"),
        pl.lit(None, pl.Int8).alias("label"),
        "reason",
    )
    return pl.concat([empty_text.cast(columns), unparsed.cast(columns)])


def _write(frame: pl.DataFrame, path: Path) -> None:
    storage = Storage(path.parent)
    with storage.atomic_path(path) as tmp:
        suffix = path.suffix.lower()
        if suffix in (".csv", ".jsonl"):
            text = frame.with_columns(pl.col("sent_at").dt.to_string("%Y-%m-%dT%H:%M:%SZ"))
            if suffix == ".csv":
                spreadsheet_safe(text).write_csv(tmp)
            else:
                text.write_ndjson(tmp)
        else:
            frame.write_parquet(tmp)


def spreadsheet_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """Text cells that a spreadsheet would run as a formula, prefixed with an apostrophe.

    Why: messages are written by fraudsters, and a CSV opened in Excel or
    LibreOffice runs a cell starting with ``=``, ``+``, ``-``, ``@``, tab or
    carriage return as a formula (CSV injection, e.g. ``=HYPERLINK(...)``); the
    apostrophe makes it shown as text. The ``.jsonl`` and ``.parquet`` outputs
    keep every value exactly.
    """
    risky = r"^[=+\-@\t\r]"
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(risky)).then(pl.lit("'") + pl.col(name)).otherwise(pl.col(name)).alias(name)
        for name, dtype in frame.schema.items()
        if dtype == pl.Utf8
    )
