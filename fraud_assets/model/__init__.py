"""The fraud classifier: one torch model over hashed n-grams, frozen embeddings,
time features and cheap text statistics, and its training.

Why this design: a frozen sentence embedding may not read the messages'
language well (all-MiniLM-L6-v2 maps most Chinese characters to ``[UNK]``;
the default multilingual-e5-small reads Chinese, but alone scores below
n-grams on hard Chinese text), so the model must not depend on it, and on
hard Chinese text a char-n-gram TF-IDF logistic regression is a strong bar. The model contains that regression and can only
add to it:

- *wide (linear) part*: char 1-4-grams and word 1-2-grams (jieba) hashed into
  ``wide_buckets``, sublinear TF-IDF (IDF from the train split, each group
  L2-normalised per text), one weight per bucket. Fitted first, to
  convergence, as an L2 logistic regression with C chosen on validation
  (:mod:`fraud_assets.model.linear`), then fixed;
- *deep part*: [embedding ; time features ; text statistics], standardised
  with train-split statistics, through a one-layer MLP, concatenated with a
  fastText-style bag of the same n-grams (ids modulo ``ngram_buckets``), into
  a small head. Trained by mini-batch on top of the fixed linear logit, so it
  learns the residual;
- *dense part*: an L2 logistic regression over the same standardised dense
  features, fitted on its own after the deep part
  (:func:`fraud_assets.model.linear.fit_dense`), then fixed;
- *blend*: ``a * wide + b * deep + d * dense + c``, the combination of parts
  (with the linear part, where there is one) chosen by cross-fitted
  validation log-loss and Platt-calibrated (:mod:`fraud_assets.model.calibration`).

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

from fraud_assets.model.config import (
    HISTORY_KEYS,
    TENSORBOARD_TAGS,
    TEXT_STAT_COLUMNS,
    FeatureSpec,
    TrainConfig,
    default_time_columns,
)
from fraud_assets.model.featurize import text_stats
from fraud_assets.model.hashing import compute_idf, hash_char_ngrams, tfidf_weights
from fraud_assets.model.train import train_classifier
from fraud_assets.model.trained import TrainedModel, build_model
from fraud_assets.thresholds import best_f1_threshold

__all__ = [
    "HISTORY_KEYS",
    "TENSORBOARD_TAGS",
    "TEXT_STAT_COLUMNS",
    "FeatureSpec",
    "TrainConfig",
    "TrainedModel",
    "best_f1_threshold",
    "build_model",
    "compute_idf",
    "default_time_columns",
    "hash_char_ngrams",
    "text_stats",
    "tfidf_weights",
    "train_classifier",
]
