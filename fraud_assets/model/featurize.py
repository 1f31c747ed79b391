"""A frame to model inputs: the dense matrix (embedding, time features, text statistics) and lexical CSR triples."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from fraud_assets.model.config import TEXT_STAT_COLUMNS, FeatureSpec
from fraud_assets.model.hashing import compute_idf, hash_char_ngrams
from fraud_assets.model.lexical import hash_word_groups, hour_blocks
from fraud_assets.text import PHONE_IN_TEXT, URL_PATTERN


def text_stats(texts: pl.Series) -> np.ndarray:
    """Cheap per-text statistics, float32 ``[n, len(TEXT_STAT_COLUMNS)]``."""
    s = texts.fill_null("").cast(pl.Utf8)
    n = s.str.len_chars().cast(pl.Float64)
    denom = n.clip(lower_bound=1.0)
    frame = pl.DataFrame({"t": s, "n": n, "d": denom}).select(
        (pl.col("n").log1p()).alias("log_chars"),
        (pl.col("t").str.count_matches(r"\d") / pl.col("d")).alias("digit_share"),
        (pl.col("t").str.count_matches(r"[A-Za-z]") / pl.col("d")).alias("latin_share"),
        (pl.col("t").str.count_matches(r"[\p{Han}]") / pl.col("d")).alias("cjk_share"),
        (pl.col("t").str.count_matches(r"\s") / pl.col("d")).alias("space_share"),
        (pl.col("t").str.count_matches(r"[^\w\s]") / pl.col("d")).alias("punct_share"),
        (pl.col("t").str.count_matches(r"\p{Lu}") / pl.col("d")).alias("upper_share"),
        pl.col("t").str.contains(f"(?i){URL_PATTERN}").cast(pl.Float64).alias("has_url"),
        pl.col("t").str.contains(PHONE_IN_TEXT).cast(pl.Float64).alias("has_phone"),
        (pl.col("t").str.count_matches(r"\d+").cast(pl.Float64).log1p()).alias("log_digit_runs"),
    )
    return frame.select(TEXT_STAT_COLUMNS).to_numpy().astype(np.float32)


@dataclass
class _Features:
    """Model inputs for a frame: raw dense matrix and the lexical CSR triples (char, then words)."""

    n: int
    dense: np.ndarray | None  # float32 [n, dense_dim], unstandardised
    lexical: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def idf(self, buckets: int) -> np.ndarray:
        """IDF per bucket over all lexical groups (groups hash into disjoint buckets, up to collisions)."""
        if not self.lexical:
            return np.zeros(buckets, np.float32)
        ids = np.concatenate([ids for _, ids, _ in self.lexical])
        return compute_idf(self.lexical[0][0], ids, buckets)


def _embedding_matrix(frame: pl.DataFrame, dim: int) -> np.ndarray:
    col = frame.get_column("embedding")
    if isinstance(col.dtype, pl.List):
        col = col.list.to_array(dim)  # raises if a row has another length
    if not isinstance(col.dtype, pl.Array):
        raise ValueError(f"column 'embedding' must be Array(Float32, {dim}), got {col.dtype}")
    if col.null_count():
        raise ValueError(f"column 'embedding' has {col.null_count()} null rows")
    mat = col.to_numpy().astype(np.float32, copy=False)
    if mat.ndim != 2 or mat.shape[1] != dim:
        raise ValueError(f"embeddings have dimension {mat.shape[1:]} but the model expects {dim}")
    return mat


def _featurise(frame: pl.DataFrame, spec: FeatureSpec, *, dense: bool = True, lexical: bool = True) -> _Features:
    """Model inputs of a frame; ``dense`` / ``lexical`` select the parts (training builds the lexical
    part first and the dense matrix only after the linear part is fitted, to bound its peak memory)."""
    needed = spec.required_columns if dense else spec.lexical_columns
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks the columns this model needs: {missing}")
    return _Features(frame.height, _dense_matrix(frame, spec) if dense else None, _lexical(frame, spec) if lexical else [])


def _dense_matrix(frame: pl.DataFrame, spec: FeatureSpec) -> np.ndarray | None:
    parts: list[np.ndarray] = []
    if spec.embedding_dim:
        parts.append(_embedding_matrix(frame, spec.embedding_dim))
    if spec.time_columns:
        t = frame.select(pl.col(c).cast(pl.Float32).fill_null(0.0).fill_nan(0.0) for c in spec.time_columns)
        parts.append(t.to_numpy().astype(np.float32))
    if spec.text_stat_columns:
        parts.append(text_stats(frame.get_column("text")))
    if spec.group_columns:
        g = frame.select(pl.col(c).cast(pl.Float32).fill_null(0.0).fill_nan(0.0) for c in spec.group_columns)
        parts.append(g.to_numpy().astype(np.float32))
    return np.ascontiguousarray(np.concatenate(parts, axis=1)) if parts else None


def _lexical(frame: pl.DataFrame, spec: FeatureSpec) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    lexical = []
    if spec.hash_space:
        texts = frame.get_column("text")
        lexical.append(hash_char_ngrams(texts, spec.hash_space, spec.ngram_min, spec.ngram_max, spec.ngram_lowercase))
        if spec.word_ngram_max:
            blocks = hour_blocks(frame, spec.cross_hour_block) if spec.cross_hour_block else None
            lexical += hash_word_groups(texts, spec.hash_space, spec.word_ngram_max, spec.ngram_lowercase, blocks)
    return lexical
