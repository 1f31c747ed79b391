"""Champion / challenger: promote a trained model only if it is not worse than production."""

from __future__ import annotations

from collections.abc import Callable
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
    candidate_dir: str | Path,
    production: str | Path,
    dataset: pl.DataFrame,
    *,
    tolerance: float = 0.0,
    read_parquet: Callable[[str], pl.DataFrame] = pl.read_parquet,
) -> PromotionDecision:
    """Re-score the champion on the challenger's test split and compare test F1.

    ``production`` is the registry's pointer file. The challenger's F1 comes
    from its evaluation (threshold chosen on validation); the champion is
    scored at its own stored threshold. When the champion was trained on a
    different embedding model its vectors cannot be recomputed here, so its
    recorded test F1 is used instead, and the reason says so.

    Both are compared on the test rows the champion was neither trained nor
    calibrated on (its split, ``read_parquet`` of the card's
    ``training_dataset``): new data re-draws a stratified split, so the
    challenger's test split can hold rows of the champion's train split, on
    which the champion scores as if it knew the answers. When fewer than half
    the test rows, or only one class, would be left, the whole test split is
    used and the reason says so.
    """
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
        test, basis = _unseen_by_champion(dataset.filter(pl.col("split") == "test"), champion_card, read_parquet)
        meta.update(test_rows=int((dataset["split"] == "test").sum()), test_rows_compared=test.height)
        champion_f1 = _f1(champion, test, float(champion_card["threshold"]))
        if test.height < meta["test_rows"]:
            challenger_f1 = meta["challenger_f1_compared"] = _f1(
                load_model(candidate_dir)[0], test, float(challenger_card["threshold"])
            )
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


def _f1(model: Any, test: pl.DataFrame, threshold: float) -> float:
    from fraud_assets.evaluation import binary_metrics

    return float(binary_metrics(test["label"].to_numpy(), model.predict_proba(test), threshold)["f1"])


def _unseen_by_champion(
    test: pl.DataFrame, champion_card: dict[str, Any], read_parquet: Callable[[str], pl.DataFrame]
) -> tuple[pl.DataFrame, str]:
    """The test rows whose text the champion did not see in its train or validation split, and how
    they were chosen (see :func:`compare_with_champion`)."""
    try:
        seen = read_parquet(champion_card["training_dataset"]).filter(pl.col("split") != "test")["text_hash"]
    except (KeyError, OSError, pl.exceptions.PolarsError) as exc:
        return test, f"re-scored on the whole test split (the champion's split cannot be read: {exc})"
    unseen = test.filter(~pl.col("text_hash").is_in(seen.implode()))
    if unseen.height == test.height:
        return test, "re-scored on the same test split"
    if unseen.height * 2 < test.height or unseen["label"].n_unique() < 2:
        return test, f"re-scored on the whole test split: only {unseen.height} of its {test.height} rows are new to the champion"
    return unseen, f"both scored on the {unseen.height} of {test.height} test rows the champion did not train on"
