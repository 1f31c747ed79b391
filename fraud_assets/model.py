"""The fraud classifier: one torch model over hashed n-grams, frozen embeddings,
time features and cheap text statistics, and its training.

Why this design: the default sentence embedding (all-MiniLM-L6-v2) is
English-centric and maps most Chinese characters to ``[UNK]``, so the model
must not depend on it, and on hard Chinese text a char-n-gram TF-IDF logistic
regression is a strong bar. The model contains that regression and can only
add to it:

- *wide (linear) part*: char 1-4-grams and word 1-2-grams (jieba) hashed into
  ``wide_buckets``, sublinear TF-IDF (IDF from the train split, each group
  L2-normalised per text), one weight per bucket. Fitted first, to
  convergence, as an L2 logistic regression with C chosen on validation
  (:mod:`fraud_assets.linear`), then fixed;
- *deep part*: [embedding ; time features ; text statistics], standardised
  with train-split statistics, through a one-layer MLP, concatenated with a
  fastText-style bag of the same n-grams (ids modulo ``ngram_buckets``), into
  a small head. Trained by mini-batch on top of the fixed linear logit, so it
  learns the residual;
- *blend*: ``a * wide + b * deep + c``, chosen among linear-only, deep-only
  and both by cross-fitted validation log-loss and Platt-calibrated
  (:mod:`fraud_assets.calibration`).

The deep n-gram table (``ngram_buckets`` x ``ngram_dim``) is trained with a
row-wise ("lazy") Adam on the rows a batch touches; everything else uses
AdamW. This is the sparse-update idea of ``nn.EmbeddingBag(sparse=True)`` +
``torch.optim.SparseAdam`` without torch's sparse-tensor arithmetic, which
measured several times slower.

Validation metrics (F1, precision, recall, accuracy) are computed at the
threshold that maximises validation F1, which is how the evaluation step picks
the operating threshold; ``val_f1_at_0_5`` is recorded too.

IDF, standardisation statistics, the linear weights and the blend are
registered buffers of the module, so they travel with the weights
(safetensors) and a loaded model is self-contained.

Heavy imports (torch) happen inside functions only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

#: Fallback copy of ``fraud_assets.time_features.TIME_FEATURE_COLUMNS`` (the
#: shared data contract) used only when that module cannot be imported.
_CONTRACT_TIME_COLUMNS: tuple[str, ...] = (
    "hour_sin", "hour_cos", "dow_sin", "dow_cos", "month_sin", "month_cos",
    "dom_sin", "dom_cos", "week_sin", "week_cos", "season_sin", "season_cos",
    "has_timestamp",
)  # fmt: skip

#: Cheap text statistics (see :func:`text_stats`). Fraud texts are much longer
#: and richer in digits, links and phone numbers than ordinary messages.
TEXT_STAT_COLUMNS: tuple[str, ...] = (
    "log_chars", "digit_share", "latin_share", "cjk_share", "space_share",
    "punct_share", "upper_share", "has_url", "has_phone", "log_digit_runs",
)  # fmt: skip

#: Tags written to TensorBoard; the dashboard and tests rely on these names.
TENSORBOARD_TAGS: tuple[str, ...] = (
    "Train/BatchLoss", "Train/EpochAccuracy", "Train/EpochLoss", "Train/LearningRate",
    "Val/EpochAccuracy", "Val/EpochLoss", "Val/F1Score", "Val/Precision", "Val/Recall",
)  # fmt: skip

#: Keys of every ``TrainedModel.history`` entry.
HISTORY_KEYS: tuple[str, ...] = (
    "epoch", "train_loss", "train_accuracy", "learning_rate", "val_loss", "val_accuracy",
    "val_f1", "val_precision", "val_recall", "val_threshold", "val_f1_at_0_5", "seconds",
)  # fmt: skip

_MARK_START, _MARK_END = "\x02", "\x03"  # text boundaries, so n-grams can see "starts with"
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def default_time_columns() -> tuple[str, ...]:
    """The time feature columns of the data contract."""
    try:
        from fraud_assets.time_features import TIME_FEATURE_COLUMNS
    except ImportError:  # the module is optional for this one constant
        return _CONTRACT_TIME_COLUMNS
    return tuple(TIME_FEATURE_COLUMNS)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes training. Defaults are meant to be good as they are.

    Feature groups can be switched off one at a time for ablations; at least
    one must stay on.
    """

    # feature groups
    use_embedding: bool = True
    use_time: bool = True
    use_ngrams: bool = True
    use_text_stats: bool = True
    # lexical features (hashed, TF-IDF weighted): char n-grams and jieba / \w+ word n-grams
    ngram_min: int = 1
    ngram_max: int = 4
    word_ngram_max: int = 2  # 0 = no word n-grams
    ngram_buckets: int = 2**18  # rows of the deep bag table (few collisions matter little there)
    wide_buckets: int = 2**22  # the linear part's hash space; a multiple of ngram_buckets
    ngram_dim: int = 64
    ngram_lowercase: bool = True
    # the linear part: logistic regression fitted first, to convergence (fraud_assets.linear)
    use_wide: bool = True
    wide_views: tuple[str, ...] = ("plain", "nb")
    wide_cs: tuple[float, ...] = tuple(2.0**k for k in range(-4, 11))  # L2 strengths tried per view, chosen on validation
    # the deep part (MLP over dense features + n-gram bag), trained on top of the fixed linear part
    use_deep: bool = True
    # stack the parts and calibrate them on validation (fraud_assets.calibration)
    calibrate: bool = True
    # network
    hidden: int = 128
    dropout: float = 0.2
    # optimisation
    lr: float = 2e-3  # AdamW, dense parameters
    weight_decay: float = 1e-4
    sparse_lr: float = 1e-2  # row-wise Adam on the n-gram table (fastText-like higher rate)
    batch_size: int = 256
    max_epochs: int = 40
    patience: int = 5
    warmup_epochs: float = 1.0
    min_loss_delta: float = 1e-3  # a tie on val F1 counts as better only if val loss drops this much
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    # None = the contract's time columns (fraud_assets.time_features)
    time_columns: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("time_columns", "wide_views", "wide_cs"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


@dataclass(frozen=True)
class FeatureSpec:
    """What the model reads from a frame, fixed at training time.

    The IDF vector and the dense standardisation statistics are buffers of the
    module (``idf``, ``dense_mean``, ``dense_std``), not fields here, so they are
    stored with the weights.
    """

    embedding_dim: int  # 0 when embeddings are off
    time_columns: tuple[str, ...]  # empty when time features are off
    text_stat_columns: tuple[str, ...]  # empty when text statistics are off
    ngram_min: int
    ngram_max: int
    ngram_buckets: int  # 0 when the deep bag is off
    ngram_lowercase: bool
    word_ngram_max: int = 0  # 0 when word n-grams are off
    wide_buckets: int = 0  # 0 when the linear part is off

    @property
    def hash_space(self) -> int:
        """Buckets the lexical features are hashed into (deep ids are these modulo ngram_buckets)."""
        return max(self.wide_buckets, self.ngram_buckets)

    @property
    def dense_dim(self) -> int:
        return self.embedding_dim + len(self.time_columns) + len(self.text_stat_columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        cols: list[str] = []
        if self.hash_space or self.text_stat_columns:
            cols.append("text")
        if self.embedding_dim:
            cols.append("embedding")
        return (*cols, *self.time_columns)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureSpec":
        return cls(
            embedding_dim=int(data["embedding_dim"]),
            time_columns=tuple(data["time_columns"]),
            text_stat_columns=tuple(data["text_stat_columns"]),
            ngram_min=int(data["ngram_min"]),
            ngram_max=int(data["ngram_max"]),
            ngram_buckets=int(data["ngram_buckets"]),
            ngram_lowercase=bool(data["ngram_lowercase"]),
            word_ngram_max=int(data.get("word_ngram_max", 0)),
            wide_buckets=int(data.get("wide_buckets", 0)),
        )


# --------------------------------------------------------------------------- #
# featurisation (numpy / polars only, vectorised)
# --------------------------------------------------------------------------- #
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
        pl.col("t").str.contains(r"(?i)https?://|www\.|\b[a-z0-9-]+\.(?:com|cn|net|org|cc|top|xyz|io|me|ly)\b")
        .cast(pl.Float64)
        .alias("has_url"),
        pl.col("t").str.contains(r"\+?\d[\d\- ]{6,}\d").cast(pl.Float64).alias("has_phone"),
        (pl.col("t").str.count_matches(r"\d+").cast(pl.Float64).log1p()).alias("log_digit_runs"),
    )
    return frame.select(TEXT_STAT_COLUMNS).to_numpy().astype(np.float32)


def hash_char_ngrams(
    texts: pl.Series | list[str],
    buckets: int,
    n_min: int = 1,
    n_max: int = 3,
    lowercase: bool = True,
    chunk_size: int = 16384,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hash the char n-grams of every text into buckets; return a CSR triple.

    Returns ``(indptr, ids, counts)``: text ``i`` has distinct bucket ids
    ``ids[indptr[i]:indptr[i+1]]`` (sorted) occurring ``counts[...]`` times.
    Each text is wrapped in start/end marks so n-grams at the edges are
    distinct. The hash is FNV-1a over Unicode code points with a splitmix64
    finaliser, in numpy uint64: deterministic across processes and platforms
    (unlike Python's salted ``hash``), and vectorised, so 100k texts take a
    second or two. Texts are processed in chunks to bound memory.
    """
    s = pl.Series("t", texts, dtype=pl.Utf8) if not isinstance(texts, pl.Series) else texts
    s = s.fill_null("").cast(pl.Utf8)
    if lowercase:
        s = s.str.to_lowercase()
    n_texts = len(s)
    indptrs, ids_parts, count_parts = [np.zeros(1, np.int64)], [], []
    done = 0
    for start in range(0, n_texts, chunk_size):
        chunk = s.slice(start, chunk_size)
        indptr, ids, counts = _hash_chunk(chunk, buckets, n_min, n_max)
        indptrs.append(indptr[1:] + done)
        done += len(ids)
        ids_parts.append(ids)
        count_parts.append(counts)
    indptr = np.concatenate(indptrs)
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64)
    counts = np.concatenate(count_parts) if count_parts else np.zeros(0, np.int64)
    return indptr, ids, counts


def _hash_chunk(s: pl.Series, buckets: int, n_min: int, n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = s.str.len_chars().to_numpy().astype(np.int64) + 2
    joined = "".join(_MARK_START + t + _MARK_END for t in s.to_list())
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    return _hash_sequences(cps, lengths, buckets, n_min, n_max, skip_marks=True)


def _hash_sequences(
    values: np.ndarray, lengths: np.ndarray, buckets: int, n_min: int, n_max: int, *, skip_marks: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hash the n-grams of concatenated integer sequences (text ``i`` has ``lengths[i]`` values).

    Shared by character n-grams (values = code points, with start/end marks
    that are not unigrams themselves) and word n-grams (values = token hashes).
    """
    n = len(lengths)
    owner = np.repeat(np.arange(n, dtype=np.int64), lengths)
    total = len(values)
    keys = []
    with np.errstate(over="ignore"):
        for k in range(n_min, n_max + 1):
            m = total - k + 1
            if m <= 0:
                continue
            valid = owner[: m] == owner[k - 1 :]
            if k == 1 and skip_marks:  # the bare marks are not n-grams
                valid &= (values[:m] != 2) & (values[:m] != 3)
            h = np.full(m, _FNV_OFFSET ^ np.uint64(k), dtype=np.uint64)
            for j in range(k):
                h = (h ^ values[j : j + m]) * _FNV_PRIME
            # splitmix64 finaliser: spreads FNV's weak low bits before the modulo
            h ^= h >> np.uint64(30)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
            bucket = (h % np.uint64(buckets)).astype(np.int64)
            keys.append(owner[:m][valid] * buckets + bucket[valid])
    if not keys:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    uniq, counts = np.unique(np.concatenate(keys), return_counts=True)
    rows = uniq // buckets
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, uniq % buckets, counts.astype(np.int64)


def compute_idf(indptr: np.ndarray, ids: np.ndarray, buckets: int) -> np.ndarray:
    """Smoothed IDF per bucket (sklearn's formula); 0 for buckets never seen.

    Zero for unseen buckets means n-grams that never occurred in training
    contribute nothing at prediction time (their table rows were never
    trained), rather than random noise.
    """
    n_docs = len(indptr) - 1
    df = np.bincount(ids, minlength=buckets).astype(np.float64)
    idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    idf[df == 0] = 0.0
    return idf.astype(np.float32)


def tfidf_weights(indptr: np.ndarray, ids: np.ndarray, counts: np.ndarray, idf: np.ndarray) -> np.ndarray:
    """Sublinear-tf x IDF weights, L2-normalised per text (float32, aligned with ``ids``)."""
    n = len(indptr) - 1
    w = (1.0 + np.log(counts.astype(np.float64))) * idf[ids].astype(np.float64)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    norms = np.sqrt(np.bincount(rows, weights=w * w, minlength=n))
    norms[norms == 0] = 1.0
    return (w / norms[rows]).astype(np.float32)


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


def _featurise(frame: pl.DataFrame, spec: FeatureSpec) -> _Features:
    missing = [c for c in spec.required_columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks the columns this model needs: {missing}")
    parts: list[np.ndarray] = []
    if spec.embedding_dim:
        parts.append(_embedding_matrix(frame, spec.embedding_dim))
    if spec.time_columns:
        t = frame.select(pl.col(c).cast(pl.Float32).fill_null(0.0).fill_nan(0.0) for c in spec.time_columns)
        parts.append(t.to_numpy().astype(np.float32))
    if spec.text_stat_columns:
        parts.append(text_stats(frame.get_column("text")))
    dense = np.ascontiguousarray(np.concatenate(parts, axis=1)) if parts else None
    lexical = []
    if spec.hash_space:
        texts = frame.get_column("text")
        lexical.append(hash_char_ngrams(texts, spec.hash_space, spec.ngram_min, spec.ngram_max, spec.ngram_lowercase))
        if spec.word_ngram_max:
            from fraud_assets.lexical import hash_word_ngrams

            lexical.append(hash_word_ngrams(texts, spec.hash_space, spec.word_ngram_max, spec.ngram_lowercase))
    return _Features(frame.height, dense, lexical)


# --------------------------------------------------------------------------- #
# the network
# --------------------------------------------------------------------------- #
def _build_module(config: TrainConfig, spec: FeatureSpec):
    """Construct the (untrained) network; buffers hold placeholder statistics."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FraudNet(nn.Module):
        """``blend · [wide logit, deep logit, 1]``: a linear n-gram part and a deep part, stacked.

        The deep part is [dense MLP ; n-gram bag] -> head. The wide part is a
        logistic regression over the TF-IDF n-grams (``wide_weight``,
        ``wide_bias``), fitted before the deep part and then fixed; ``blend``
        holds the stacking / calibration weights fitted on validation.
        """

        def __init__(self) -> None:
            super().__init__()
            fused = 0
            self.dense_dim = spec.dense_dim
            self.deep_buckets = spec.ngram_buckets
            self.use_wide = spec.wide_buckets > 0
            self.register_buffer("idf", torch.zeros(spec.hash_space))
            self.register_buffer("blend", torch.tensor([1.0, 1.0, 0.0]))  # wide, deep, bias
            if self.use_wide:
                self.register_buffer("wide_weight", torch.zeros(spec.wide_buckets))
                self.register_buffer("wide_bias", torch.zeros(1))
            if self.dense_dim:
                self.register_buffer("dense_mean", torch.zeros(self.dense_dim))
                self.register_buffer("dense_std", torch.ones(self.dense_dim))
                self.dense = nn.Sequential(
                    nn.Linear(self.dense_dim, config.hidden), nn.GELU(), nn.Dropout(config.dropout)
                )
                fused += config.hidden
            if self.deep_buckets:
                table = torch.empty(spec.ngram_buckets, config.ngram_dim)
                nn.init.normal_(table, std=0.05)
                # updated by _RowAdam, not by autograd on the full table
                self.ngram_table = nn.Parameter(table, requires_grad=False)
                fused += config.ngram_dim
            self.use_deep = fused > 0
            if self.use_deep:
                self.head = nn.Sequential(
                    nn.Linear(fused, config.hidden), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(config.hidden, 1)
                )

        def parts(self, dense, ids, offsets, weights, table=None, deep_ids=None):
            """(wide logit, deep logit); zeros for a part the model does not have."""
            n = offsets.shape[0] if offsets is not None else dense.shape[0]
            wide = deep = torch.zeros(n)
            if self.use_wide:
                wide = F.embedding_bag(ids, self.wide_weight.unsqueeze(1), offsets, mode="sum",
                                       per_sample_weights=weights).squeeze(1) + self.wide_bias
            if self.use_deep:
                feats = []
                if self.dense_dim:
                    feats.append(self.dense((dense - self.dense_mean) / self.dense_std))
                if self.deep_buckets:
                    table = self.ngram_table if table is None else table
                    deep_ids = torch.remainder(ids, self.deep_buckets) if deep_ids is None else deep_ids
                    feats.append(F.embedding_bag(deep_ids, table, offsets, mode="sum", per_sample_weights=weights))
                deep = self.head(torch.cat(feats, dim=1)).squeeze(1)
            return wide, deep

        def forward(self, dense, ids, offsets, weights, table=None, deep_ids=None, raw: bool = False):
            """Logits; ``raw`` gives the unblended sum (wide + deep), the model before calibration."""
            wide, deep = self.parts(dense, ids, offsets, weights, table, deep_ids)
            if raw:
                return wide + deep
            return self.blend[0] * wide + self.blend[1] * deep + self.blend[2]

    return FraudNet()


class _RowAdam:
    """Adam on the rows of a big table that a step touches ("lazy Adam").

    Moments of untouched rows are left alone (as in SparseAdam / TF LazyAdam);
    bias correction uses the global step.
    """

    def __init__(self, table, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        import torch

        self.table = table
        self.m = torch.zeros_like(table)
        self.v = torch.zeros_like(table)
        self.betas, self.eps, self.t = betas, eps, 0

    def step(self, rows, grad, lr: float) -> None:
        import torch

        b1, b2 = self.betas
        self.t += 1
        with torch.no_grad():
            m = self.m[rows].mul_(b1).add_(grad, alpha=1 - b1)
            v = self.v[rows].mul_(b2).addcmul_(grad, grad, value=1 - b2)
            self.m[rows] = m
            self.v[rows] = v
            denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
            update = m.div_(denom).mul_(-lr / (1 - b1**self.t))
            self.table.index_add_(0, rows, update)  # rows are unique


class _Inputs:
    """Model inputs as tensors, with fast batch gathering from the CSR.

    ``matrix`` is the same TF-IDF as a scipy CSR (each lexical group
    L2-normalised on its own, then summed), which the linear part is fitted on.
    """

    def __init__(self, feats: _Features, module) -> None:
        import torch

        from fraud_assets.lexical import tfidf_matrix

        self.n = feats.n
        self.dense = torch.from_numpy(feats.dense) if feats.dense is not None else None
        self.indptr = self.ids = self.weights = self.matrix = None
        if feats.lexical:
            idf = module.idf.detach().cpu().numpy()
            self.matrix = sum(tfidf_matrix(*group, idf) for group in feats.lexical).tocsr()
            self.matrix.sort_indices()
            self.indptr = torch.from_numpy(self.matrix.indptr.astype(np.int64))
            self.ids = torch.from_numpy(self.matrix.indices.astype(np.int64))
            self.weights = torch.from_numpy(self.matrix.data.astype(np.float32))

    def batch(self, rows):
        import torch

        dense = self.dense[rows] if self.dense is not None else None
        if self.indptr is None:
            return dense, None, None, None
        starts = self.indptr[rows]
        lens = self.indptr[rows + 1] - starts
        offsets = torch.zeros_like(lens)
        torch.cumsum(lens[:-1], 0, out=offsets[1:])
        gather = torch.repeat_interleave(starts - offsets, lens) + torch.arange(int(lens.sum()))
        return dense, self.ids[gather], offsets, self.weights[gather]


def _logits(module, inputs: _Inputs, batch_size: int = 8192, *, raw: bool = False, parts: bool = False):
    """Logits for every row (``raw``: before the blend); ``parts``: the (wide, deep) pair instead."""
    import torch

    was_training = module.training
    module.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, inputs.n, batch_size):
            rows = torch.arange(start, min(start + batch_size, inputs.n))
            batch = inputs.batch(rows)
            out.append(torch.stack(module.parts(*batch), 1) if parts else module(*batch, raw=raw))
    module.train(was_training)
    if not out:
        return np.zeros((0, 2) if parts else 0, np.float32)
    result = torch.cat(out).numpy()
    return (result[:, 0], result[:, 1]) if parts else result


# --------------------------------------------------------------------------- #
# metrics
# --------------------------------------------------------------------------- #
def best_f1_threshold(y_true: np.ndarray, proba: np.ndarray) -> tuple[float, float, float, float]:
    """Threshold maximising F1 (fraud positive): ``(threshold, f1, precision, recall)``.

    Predict fraud when ``proba >= threshold``. Ties are broken towards the
    higher threshold (fewer false alarms). Returns F1 0 when there is no fraud.
    """
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(proba, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0 or len(y) == 0:
        return 1.0, 0.0, 0.0, 0.0
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    # only cut where the score changes, so equal scores fall on the same side
    last_of_run = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    tp = np.cumsum(y_sorted)[last_of_run]
    predicted = (np.arange(len(p_sorted)) + 1)[last_of_run]
    f1 = 2 * tp / (predicted + n_pos)
    i = int(np.argmax(f1))  # first max = highest threshold
    return float(p_sorted[last_of_run][i]), float(f1[i]), float(tp[i] / predicted[i]), float(tp[i] / n_pos)


def _smoothed_bce(logits, y, pos_weight, eps: float):
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, y * (1 - eps) + eps / 2, pos_weight=pos_weight)


# --------------------------------------------------------------------------- #
# trained model
# --------------------------------------------------------------------------- #
@dataclass
class TrainedModel:
    """A trained classifier plus everything needed to score a new frame."""

    module: Any  # torch.nn.Module
    config: TrainConfig
    spec: FeatureSpec
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    #: how the parts were fitted and chosen: linear part (C per view), blend, calibration on validation
    selection: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, frame: pl.DataFrame, batch_size: int = 8192, *, calibrated: bool = True) -> np.ndarray:
        """Fraud probability per row (float64, same order as ``frame``).

        ``frame`` needs ``text``, ``embedding`` and the time columns, except for
        feature groups the model was trained without. ``calibrated=False``
        gives the model before the validation-fitted blend (wide + deep logit),
        to show what calibration changed.
        """
        import torch

        feats = _featurise(frame, self.spec)
        logits = _logits(self.module, _Inputs(feats, self.module), batch_size, raw=not calibrated)
        return torch.sigmoid(torch.from_numpy(logits)).numpy().astype(np.float64)

    @property
    def best(self) -> dict[str, float]:
        """The history entry of the restored (best) epoch."""
        return next(h for h in self.history if h["epoch"] == self.best_epoch)


# --------------------------------------------------------------------------- #
# training
# --------------------------------------------------------------------------- #
def _make_spec(train: pl.DataFrame, config: TrainConfig) -> FeatureSpec:
    deep = config.use_deep
    embedding_dim = 0
    if config.use_embedding and deep:
        dtype = train.schema.get("embedding")
        if dtype is None:
            raise ValueError("use_embedding=True but the dataset has no 'embedding' column")
        embedding_dim = dtype.size if isinstance(dtype, pl.Array) else len(train["embedding"][0])
    time_columns = (config.time_columns or default_time_columns()) if config.use_time and deep else ()
    return FeatureSpec(
        embedding_dim=int(embedding_dim),
        time_columns=tuple(time_columns),
        text_stat_columns=TEXT_STAT_COLUMNS if config.use_text_stats and deep else (),
        ngram_min=config.ngram_min,
        ngram_max=config.ngram_max,
        ngram_buckets=config.ngram_buckets if config.use_ngrams and deep else 0,
        ngram_lowercase=config.ngram_lowercase,
        word_ngram_max=config.word_ngram_max if config.use_ngrams else 0,
        wide_buckets=config.wide_buckets if config.use_ngrams and config.use_wide else 0,
    )


def _validate(dataset: pl.DataFrame, config: TrainConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    if not (config.use_embedding or config.use_time or config.use_ngrams or config.use_text_stats):
        raise ValueError("TrainConfig switches off every feature group; keep at least one")
    if not (config.use_deep or (config.use_wide and config.use_ngrams)):
        raise ValueError("TrainConfig switches off both the deep part and the linear n-gram part; keep one")
    if not 1 <= config.ngram_min <= config.ngram_max:
        raise ValueError("need 1 <= ngram_min <= ngram_max")
    if config.wide_buckets % config.ngram_buckets:
        raise ValueError("wide_buckets must be a multiple of ngram_buckets (deep ids are wide ids modulo ngram_buckets)")
    for col in ("label", "split"):
        if col not in dataset.columns:
            raise ValueError(f"dataset lacks the column {col!r}")
    train = dataset.filter(pl.col("split") == "train")
    val = dataset.filter(pl.col("split") == "validation")
    if train.height == 0 or val.height == 0:
        raise ValueError(f"need train and validation rows, got {train.height} train / {val.height} validation")
    if train["label"].null_count() or val["label"].null_count():
        raise ValueError("labels must not be null")
    if train["label"].n_unique() < 2:
        raise ValueError("the train split holds only one class")
    return train, val


def _val_record(y_val: np.ndarray, logits: np.ndarray, loss: float) -> dict[str, float]:
    """Validation metrics of one epoch at the F1-maximising threshold (and at 0.5)."""
    proba = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -50, 50)))
    threshold, f1, precision, recall = best_f1_threshold(y_val, proba)
    pred = (proba >= threshold).astype(np.int64)
    pred05 = (proba >= 0.5).astype(np.int64)
    tp05 = int(((pred05 == 1) & (y_val == 1)).sum())
    return {
        "val_loss": loss,
        "val_accuracy": float((pred == y_val).mean()),
        "val_f1": f1,
        "val_precision": precision,
        "val_recall": recall,
        "val_threshold": threshold,
        "val_f1_at_0_5": 2 * tp05 / max(1, int(pred05.sum()) + int(y_val.sum())),
    }


def _init_statistics(module, f_train: _Features, spec: FeatureSpec) -> None:
    """Standardisation statistics and IDF from the train split, into the module's buffers."""
    import torch

    with torch.no_grad():
        if spec.dense_dim:
            mean = f_train.dense.astype(np.float64).mean(axis=0)
            std = f_train.dense.astype(np.float64).std(axis=0)
            std[std < 1e-6] = 1.0  # constant columns (e.g. no timestamps) become 0
            module.dense_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            module.dense_std.copy_(torch.from_numpy(std.astype(np.float32)))
        if spec.hash_space:
            module.idf.copy_(torch.from_numpy(f_train.idf(spec.hash_space)))


def _fit_linear_part(module, x_train: _Inputs, x_val: _Inputs, y_train, y_val, config: TrainConfig, log) -> dict:
    """Fit the wide part as a logistic regression (fraud_assets.linear) and fix it in the module."""
    import torch

    from fraud_assets.linear import fit_wide

    t0 = time.perf_counter()
    fit = fit_wide(x_train.matrix, y_train, x_val.matrix, y_val, views=config.wide_views, cs=config.wide_cs, seed=config.seed)
    with torch.no_grad():
        module.wide_weight.copy_(torch.from_numpy(fit.weight))
        module.wide_bias.fill_(fit.bias)
    chosen = ", ".join(f"{v} C={fit.report[v]['C']:g}" for v in config.wide_views)
    log(f"linear part fitted in {time.perf_counter() - t0:.1f}s ({chosen}), val log-loss {fit.report['val_log_loss']:.4f}")
    return {**fit.report, "seconds": time.perf_counter() - t0}


def _fit_blend(module, x_val: _Inputs, y_val: np.ndarray, config: TrainConfig, log) -> dict:
    """Stack the parts and calibrate on validation (fraud_assets.calibration); record before/after."""
    import torch

    from fraud_assets.calibration import expected_calibration_error, fit_blend

    wide, deep = _logits(module, x_val, parts=True)
    parts = {}
    if module.use_wide:
        parts["linear"] = wide.astype(np.float64)
    if module.use_deep:
        parts["deep"] = deep.astype(np.float64)
    raw = 1.0 / (1.0 + np.exp(-np.clip(wide + deep, -50, 50)))
    if config.calibrate:
        blend = fit_blend(parts, y_val, seed=config.seed)
        w = [blend.weights.get("linear", 0.0), blend.weights.get("deep", 0.0), blend.bias]
        module.blend.copy_(torch.tensor(w, dtype=torch.float32))
        report = {"chosen": blend.chosen, "weights": blend.weights, "bias": blend.bias, **blend.report}
    else:
        report = {"chosen": "uncalibrated"}
    cal = 1.0 / (1.0 + np.exp(-np.clip(_logits(module, x_val).astype(np.float64), -50, 50)))
    report["validation"] = {
        "brier_before": float(np.mean((raw - y_val) ** 2)), "brier_after": float(np.mean((cal - y_val) ** 2)),
        "ece_before": expected_calibration_error(y_val, raw), "ece_after": expected_calibration_error(y_val, cal),
    }
    log(f"blend: {report['chosen']} (cross-fitted val log-loss {report.get('candidates')})")
    return report


def train_classifier(
    dataset: pl.DataFrame,
    config: TrainConfig = TrainConfig(),
    *,
    tensorboard_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainedModel:
    """Fit on ``split == "train"``; choose and calibrate on ``split == "validation"``.

    Three stages, so the fused model can only add to its linear part:

    1. the linear part, a logistic regression over the TF-IDF n-grams, fitted
       to convergence with its L2 strength chosen on validation
       (:func:`fraud_assets.linear.fit_wide`), then fixed;
    2. the deep part, trained by mini-batch on top of the fixed linear logit
       (:func:`_train_deep`: it learns the residual), early-stopped on
       validation F1 with the best epoch restored;
    3. the blend: linear only, deep only or both, chosen by cross-fitted
       validation log-loss and Platt-calibrated
       (:func:`fraud_assets.calibration.fit_blend`).

    Deterministic: same data and seed give identical history and
    probabilities. Torch's global RNG state and thread count are left as found.
    """
    import torch

    log = log or (lambda _msg: None)
    t_start = time.perf_counter()
    train, val = _validate(dataset, config)
    spec = _make_spec(train, config)

    t0 = time.perf_counter()
    f_train, f_val = _featurise(train, spec), _featurise(val, spec)
    log(f"featurised {train.height} train + {val.height} validation rows in {time.perf_counter() - t0:.1f}s")
    y_train = train["label"].cast(pl.Int64).to_numpy()
    y_val = val["label"].cast(pl.Int64).to_numpy()

    selection: dict[str, Any] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        module = _build_module(config, spec)
        _init_statistics(module, f_train, spec)
        x_train, x_val = _Inputs(f_train, module), _Inputs(f_val, module)
        if module.use_wide:
            selection["linear"] = _fit_linear_part(module, x_train, x_val, y_train, y_val, config, log)
        history, best_epoch = [], 0
        if module.use_deep:
            history, best_epoch = _train_deep(module, x_train, x_val, y_train, y_val, config, tensorboard_dir, log)
        else:
            logits = _logits(module, x_val, raw=True)
            history = [{"epoch": 1, "train_loss": float("nan"), "train_accuracy": float("nan"), "learning_rate": 0.0,
                        **_val_record(y_val, logits, float("nan")), "seconds": 0.0}]
            best_epoch = 1
        selection["blend"] = _fit_blend(module, x_val, y_val, config, log)
        module.eval()
    log(f"best epoch {best_epoch} of {len(history)}, total {time.perf_counter() - t_start:.1f}s")
    return TrainedModel(module=module, config=config, spec=spec, history=history, best_epoch=best_epoch, selection=selection)


def _lr_schedule(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_epochs``, then cosine decay to 2% over ``max_epochs``."""
    total_steps = steps_per_epoch * config.max_epochs
    warmup = max(1, int(round(config.warmup_epochs * steps_per_epoch)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _train_deep(module, x_train: _Inputs, x_val: _Inputs, y_train_np, y_val_np, config: TrainConfig, tensorboard_dir, log):
    """Mini-batch training of the deep part on top of the (fixed) linear logit; returns (history, best epoch).

    Loss: BCE with logits, label smoothing and ``pos_weight = n_neg / n_pos``.
    AdamW for dense parameters (clipped gradients), row-wise Adam for the
    n-gram table. Early stopping on validation F1 at its best threshold (the
    rule that picks the operating threshold); ties go to the later epoch only
    when validation loss dropped by more than ``min_loss_delta``.
    """
    import torch

    y_train = torch.from_numpy(y_train_np.astype(np.float32))
    y_val = torch.from_numpy(y_val_np.astype(np.float32))
    pos_weight = torch.tensor((len(y_train) - float(y_train.sum())) / float(y_train.sum()))
    writer = None
    if tensorboard_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard_dir))
    dense_params = [p for p in module.parameters() if p.requires_grad]
    opt = {
        "adamw": torch.optim.AdamW(dense_params, lr=config.lr, weight_decay=config.weight_decay),
        "rows": _RowAdam(module.ngram_table.data) if module.deep_buckets else None,
        "params": dense_params, "pos_weight": pos_weight, "writer": writer, "step": 0,
        "factor": _lr_schedule(config, math.ceil(x_train.n / config.batch_size)),
    }
    shuffler = torch.Generator().manual_seed(config.seed)
    history, best_key, best_state, best_epoch, stale = [], None, None, 0, 0
    for epoch in range(1, config.max_epochs + 1):
        t_epoch = time.perf_counter()
        lr_now = config.lr * opt["factor"](opt["step"])
        loss, acc = _train_epoch(module, x_train, y_train, torch.randperm(x_train.n, generator=shuffler), config, opt)
        val_logits = torch.from_numpy(_logits(module, x_val, raw=True))
        with torch.no_grad():
            val_loss = float(_smoothed_bce(val_logits, y_val, pos_weight, config.label_smoothing))
        record = {"epoch": epoch, "train_loss": loss, "train_accuracy": acc, "learning_rate": lr_now,
                  **_val_record(y_val_np, val_logits.numpy(), val_loss), "seconds": time.perf_counter() - t_epoch}
        history.append(record)
        _log_epoch(writer, record)
        f1 = record["val_f1"]
        improved = best_key is None or f1 > best_key[0] or (f1 == best_key[0] and val_loss < best_key[1] - config.min_loss_delta)
        if improved:
            best_key, best_epoch, stale = (f1, val_loss), epoch, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            stale += 1
        log(f"epoch {epoch}/{config.max_epochs} loss {loss:.4f} val_loss {val_loss:.4f} val_f1 {f1:.4f} "
            f"(p {record['val_precision']:.3f} r {record['val_recall']:.3f} @ {record['val_threshold']:.3f})"
            f"{' *' if improved else ''} {record['seconds']:.1f}s")
        if stale >= config.patience:
            break
    module.load_state_dict(best_state)
    if writer is not None:
        writer.flush()
        writer.close()
    return history, best_epoch


def _train_epoch(module, x_train: _Inputs, y_train, order, config: TrainConfig, opt: dict) -> tuple[float, float]:
    """One pass over the train split; returns (mean loss, accuracy)."""
    import torch

    module.train()
    loss_sum, correct = 0.0, 0
    for start in range(0, x_train.n, config.batch_size):
        rows = order[start : start + config.batch_size]
        factor = opt["factor"](opt["step"])
        for group in opt["adamw"].param_groups:
            group["lr"] = config.lr * factor
        dense, ids, offsets, weights = x_train.batch(rows)
        table_rows = table = deep_ids = None
        if opt["rows"] is not None:
            # autograd over the touched rows only; deep ids re-indexed into that slice
            table_rows, deep_ids = torch.unique(torch.remainder(ids, module.deep_buckets), return_inverse=True)
            table = module.ngram_table.detach()[table_rows].requires_grad_()
        logits = module(dense, ids, offsets, weights, table=table, deep_ids=deep_ids, raw=True)
        yb = y_train[rows]
        loss = _smoothed_bce(logits, yb, opt["pos_weight"], config.label_smoothing)
        opt["adamw"].zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            # the n-gram rows are left out: Adam's per-row normalisation already bounds their steps
            torch.nn.utils.clip_grad_norm_(opt["params"], config.grad_clip)
        opt["adamw"].step()
        if opt["rows"] is not None:
            opt["rows"].step(table_rows, table.grad, config.sparse_lr * factor)
        batch_loss = float(loss.detach())
        loss_sum += batch_loss * len(rows)
        correct += int(((logits.detach() > 0).float() == yb).sum())
        if opt["writer"] is not None:
            opt["writer"].add_scalar("Train/BatchLoss", batch_loss, opt["step"])
        opt["step"] += 1
    return loss_sum / x_train.n, correct / x_train.n


def _log_epoch(writer, record: dict) -> None:
    if writer is None:
        return
    for tag, key in (
        ("Train/EpochAccuracy", "train_accuracy"), ("Train/EpochLoss", "train_loss"),
        ("Train/LearningRate", "learning_rate"), ("Val/EpochAccuracy", "val_accuracy"),
        ("Val/EpochLoss", "val_loss"), ("Val/F1Score", "val_f1"),
        ("Val/Precision", "val_precision"), ("Val/Recall", "val_recall"),
    ):
        writer.add_scalar(tag, record[key], record["epoch"])


def build_model(
    config: TrainConfig, spec: FeatureSpec, state_dict: dict[str, Any], history=None, best_epoch=0, selection=None
) -> TrainedModel:
    """Rebuild a :class:`TrainedModel` from its parts (used by the registry)."""
    import torch

    with torch.random.fork_rng(devices=[]):  # init draws are overwritten; keep the caller's RNG intact
        module = _build_module(config, spec)
    module.load_state_dict(state_dict, strict=True)
    module.eval()
    return TrainedModel(
        module=module, config=config, spec=spec, history=list(history or []), best_epoch=best_epoch, selection=dict(selection or {})
    )
