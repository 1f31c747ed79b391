"""Champion / challenger: promote a trained model only if it is not worse than production."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl


@dataclass
class PromotionDecision:
    promote: bool
    reason: str
    metadata: dict[str, Any] = field(default_factory=dict)


def compare_with_champion(
    candidate_dir: str | Path, production: str | Path, dataset: pl.DataFrame, *, tolerance: float = 0.0
) -> PromotionDecision:
    """Re-score the champion on the challenger's test split and compare test F1.

    ``production`` is the registry's pointer file. The challenger's F1 comes
    from its evaluation (threshold chosen on validation); the champion is
    scored at its own stored threshold. When the champion was trained on a
    different embedding model its vectors cannot be recomputed here, so its
    recorded test F1 is used instead, and the reason says so.
    """
    from fraud_assets.evaluation import binary_metrics
    from fraud_assets.model.io import ModelLoadError, load_model, read_card, read_pointer

    challenger_card = read_card(candidate_dir)
    challenger_f1 = float(challenger_card["metrics"]["model"]["f1"])
    meta: dict[str, Any] = {"challenger": challenger_card["run_name"], "challenger_f1": challenger_f1, "tolerance": tolerance}
    try:
        if read_pointer(production) is None:
            return PromotionDecision(True, "first model: no champion in production", meta)
        champion, champion_card = load_model(production)
    except ModelLoadError as exc:
        return PromotionDecision(True, f"champion cannot be loaded ({exc}); replacing it", meta)
    meta["champion"] = champion_card.get("run_name", "unknown")
    if champion_card.get("embedding_fingerprint") == challenger_card.get("embedding_fingerprint"):
        test = dataset.filter(pl.col("split") == "test")
        scores = champion.predict_proba(test)
        champion_f1 = float(binary_metrics(test["label"].to_numpy(), scores, float(champion_card["threshold"]))["f1"])
        basis = "re-scored on the same test split"
    else:
        champion_f1 = float(champion_card["metrics"]["model"]["f1"])
        basis = "recorded F1 (different embedding model, cannot be re-scored)"
    meta.update(champion_f1=champion_f1, basis=basis)
    if challenger_f1 + tolerance >= champion_f1:
        return PromotionDecision(True, f"challenger F1 {challenger_f1:.4f} >= champion F1 {champion_f1:.4f} ({basis})", meta)
    return PromotionDecision(
        False,
        f"challenger F1 {challenger_f1:.4f} is worse than champion F1 {champion_f1:.4f} ({basis}, tolerance {tolerance}); champion kept",
        meta,
    )
