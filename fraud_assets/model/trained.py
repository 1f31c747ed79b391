"""A trained classifier (module + config + spec + history) and rebuilding one from saved parts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from fraud_assets.model.config import FeatureSpec, TrainConfig
from fraud_assets.model.featurize import _featurise
from fraud_assets.model.network import _build_module, _Inputs, _logits


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
    #: With parts refitted on train + validation: {"rows": rows_digest of the validation rows, "proba":
    #: their P(fraud) through the blend from the parts' out-of-fold twins}. See validation_proba.
    held_out_validation: dict[str, Any] | None = None

    def validation_proba(self, frame: pl.DataFrame) -> np.ndarray:
        """P(fraud) of the validation rows ``frame``, to choose the decision threshold on.

        When the linear and dense parts were refitted on train + validation the
        model has seen these rows, so its own probabilities there are too sure
        of themselves (a precision target met on them would be missed on new
        data). If ``frame`` holds the rows it was trained with, in the same
        order, the held-out probabilities recorded at training are returned;
        otherwise :meth:`predict_proba`.
        """
        held = self.held_out_validation
        if held and held.get("rows") == rows_digest(frame) and len(held.get("proba", ())) == frame.height:
            return np.asarray(held["proba"], dtype=np.float64)
        return self.predict_proba(frame)

    def predict_proba(
        self, frame: pl.DataFrame, batch_size: int = 8192, *, calibrated: bool = True, batches_per_pass: int = 8
    ) -> np.ndarray:
        """Fraud probability per row (float64, same order as ``frame``).

        ``frame`` needs ``text``, ``embedding`` and the time columns, except for
        feature groups the model was trained without. ``calibrated=False``
        gives the model before the validation-fitted blend (wide + deep logit),
        to show what calibration changed. ``batch_size`` rows go through the
        network at a time, ``batches_per_pass`` batches are featurised at a time.
        """
        return self.predict_proba_before_after(frame, batch_size, batches_per_pass=batches_per_pass)[0 if calibrated else 1]

    def predict_proba_before_after(
        self, frame: pl.DataFrame, batch_size: int = 8192, *, batches_per_pass: int = 8
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(calibrated, raw)`` probabilities from one featurisation of ``frame``.

        Why: featurising (jieba, n-gram hashing) costs far more than the network,
        and the report needs both; each equals what ``predict_proba`` gives.
        The frame is featurised ``batch_size * batches_per_pass`` rows at a time,
        so memory follows that, not the frame (featurising 200,000 rows whole
        took 1 GB); the network sees the same batches either way, so the
        probabilities are the same bits.
        """
        import torch

        rows = batch_size * max(1, batches_per_pass)
        pieces: list[list[np.ndarray]] = [[np.zeros(0, np.float32)] for _ in range(3)]
        for start in range(0, frame.height, rows):
            feats = _featurise(frame.slice(start, rows), self.spec)
            for piece, part in zip(pieces, _logits(self.module, _Inputs(feats, self.module), batch_size, parts=True)):
                piece.append(part)
        wide, deep, dense = (torch.from_numpy(np.concatenate(piece)) for piece in pieces)
        blend = self.module.blend
        calibrated = blend[0] * wide + blend[1] * deep + self.module.dense_blend * dense + blend[2]  # the module's forward
        return tuple(torch.sigmoid(logits).numpy().astype(np.float64) for logits in (calibrated, wide + deep))  # type: ignore[return-value]

    @property
    def best(self) -> dict[str, float]:
        """The history entry of the restored (best) epoch."""
        return next(h for h in self.history if h["epoch"] == self.best_epoch)


def rows_digest(frame: pl.DataFrame | pl.LazyFrame) -> str:
    """Which rows, in which order: SHA-256 of their message ids (of their texts in a frame without ids)."""
    column = "message_id" if "message_id" in frame.collect_schema().names() else "text"
    values = frame.lazy().select(pl.col(column).cast(pl.Utf8).fill_null("")).collect().to_series().to_list()
    return hashlib.sha256("\x1f".join(values).encode()).hexdigest()


def build_model(
    config: TrainConfig,
    spec: FeatureSpec,
    state_dict: dict[str, Any],
    history=None,
    best_epoch=0,
    selection=None,
    held_out_validation=None,
) -> TrainedModel:
    """Rebuild a :class:`TrainedModel` from its parts (used by the registry)."""
    import torch

    with torch.random.fork_rng(devices=[]):  # init draws are overwritten; keep the caller's RNG intact
        module = _build_module(config, spec)
    module.load_state_dict(state_dict, strict=True)
    module.eval()
    return TrainedModel(
        module=module,
        config=config,
        spec=spec,
        history=list(history or []),
        best_epoch=best_epoch,
        selection=dict(selection or {}),
        held_out_validation=held_out_validation,
    )
