"""What shapes training and what the model reads: TrainConfig, FeatureSpec and the shared constants."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

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

#: Time columns the word x time-of-day crosses are read from (contract columns; see lexical.hour_blocks).
CROSS_COLUMNS: tuple[str, ...] = ("hour_sin", "hour_cos", "has_timestamp")

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
    # words crossed with the time-of-day block of this many hours (lexical.hash_word_groups); 0 = none.
    # Needs use_time and word n-grams; texts without a timestamp get no crosses.
    cross_hour_block: int = 4
    cross_select_rows: int = 10_000  # train and validation rows the crosses are kept or dropped on, at most
    ngram_buckets: int = 2**18  # rows of the deep bag table (few collisions matter little there)
    wide_buckets: int = 2**22  # the linear part's hash space; a multiple of ngram_buckets
    ngram_dim: int = 64
    ngram_lowercase: bool = True
    # the linear part: logistic regression fitted first, to convergence (fraud_assets.model.linear)
    use_wide: bool = True
    wide_views: tuple[str, ...] = ("plain", "nb")
    wide_cs: tuple[float, ...] = tuple(2.0**k for k in range(-4, 11))  # L2 strengths tried per view, chosen on validation
    wide_select_rows: int = 100_000  # with more train rows, C is chosen on a seeded sample of this many
    # the dense part: logistic regression over the standardised dense features (embedding, time,
    # text statistics), fitted on its own like the linear part (fraud_assets.model.linear.fit_dense)
    use_dense_linear: bool = True
    # its L2 strengths: a few hundred standardised columns on thousands of rows want strong regularisation
    # (C = 1/16, the bottom of wide_cs, was chosen on every split of both Chinese proxies)
    dense_cs: tuple[float, ...] = tuple(2.0**k for k in range(-10, 5))  # 1/1024 ... 16
    dense_fit_rows: int = 50_000  # with more train rows, it is fitted on a seeded sample of this many
    # Refit the linear and dense parts on train + validation at their chosen C (fraud_assets.model.linear.refit),
    # with this many validation folds for the out-of-fold logits the blend is fitted on; 0 = on train only.
    refit_folds: int = 5
    refit_max_rows: int = 50_000  # with more train rows, no refit (6 more fits per view; a sixth more rows adds little)
    # the deep part (MLP over dense features + n-gram bag), trained on top of the fixed linear part
    use_deep: bool = True
    # stack the parts and calibrate them on validation (fraud_assets.model.calibration)
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
    # Rows an epoch visits at most (a fresh seeded sample each epoch on larger data): an epoch of the
    # deep part costs the same at a million rows as at this many, and early stopping looks as often.
    epoch_rows: int = 200_000
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
        for key in ("time_columns", "wide_views", "wide_cs", "dense_cs"):
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
    #: columns of the registered ``dense`` feature groups (fraud_assets.features), read as they are
    group_columns: tuple[str, ...] = ()
    cross_hour_block: int = 0  # 0 when there are no word x time-of-day crosses

    @property
    def lexical_columns(self) -> tuple[str, ...]:
        """The columns the lexical features are computed from."""
        if not self.hash_space:
            return ()
        return ("text", *CROSS_COLUMNS) if self.cross_hour_block else ("text",)

    @property
    def hash_space(self) -> int:
        """Buckets the lexical features are hashed into (deep ids are these modulo ngram_buckets)."""
        return max(self.wide_buckets, self.ngram_buckets)

    @property
    def dense_dim(self) -> int:
        return self.embedding_dim + len(self.time_columns) + len(self.text_stat_columns) + len(self.group_columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        cols: list[str] = []
        if self.hash_space or self.text_stat_columns:
            cols.append("text")
        if self.embedding_dim:
            cols.append("embedding")
        return tuple(dict.fromkeys((*cols, *self.time_columns, *self.lexical_columns, *self.group_columns)))

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
            group_columns=tuple(data.get("group_columns", ())),
            cross_hour_block=int(data.get("cross_hour_block", 0)),
        )
