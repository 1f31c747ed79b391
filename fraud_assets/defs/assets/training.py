"""Training assets: dataset, classifier, evaluation report and the promoted production model."""

import base64
import dataclasses
import datetime as dt
import types
import typing

import dagster as dg
import polars as pl
import pydantic

from fraud_assets.asset_names import (
    EVALUATION_REPORT,
    FRAUD_CLASSIFIER,
    MESSAGE_EMBEDDINGS,
    PRODUCTION_MODEL,
    TIME_FEATURES,
    TRAINING_DATASET,
)
from fraud_assets.dataset import ingested_partitions, load_partitions, partitions_fingerprint, per_file_outputs
from fraud_assets.defs.partitions import message_files
from fraud_assets.defs.resources import EmbedderResource, FraudSettings
from fraud_assets.metadata import table_metadata
from fraud_assets.model.config import TrainConfig
from fraud_assets.placement import GPU_OP_TAGS
from fraud_assets.promotion import compare_with_champion
from fraud_assets.storage import as_path

NOT_WORSE_THAN_CHAMPION = dg.AssetCheckSpec("not_worse_than_champion", asset=PRODUCTION_MODEL)


def _launchpad_type(annotation):
    """Dagster config has lists, not tuples: ``tuple[X, ...]`` becomes ``list[X]`` (also inside Optional)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return typing.Optional[_launchpad_type(inner)]
    if origin is tuple:
        return list[typing.get_args(annotation)[0]]  # type: ignore[misc]
    return annotation


def config_class_for(dataclass_type: type, name: str, doc: str) -> type[dg.Config]:
    """A Dagster config class with one field per dataclass field, same names and defaults.

    Generated, so a knob added to the dataclass is in the Launchpad at once and the two never drift.
    """
    hints = typing.get_type_hints(dataclass_type)
    fields = {
        f.name: (_launchpad_type(hints[f.name]), list(f.default) if isinstance(f.default, tuple) else f.default)
        for f in dataclasses.fields(dataclass_type)
    }
    return pydantic.create_model(name, __base__=dg.Config, __doc__=doc, __module__=__name__, **fields)  # type: ignore[call-overload]


if typing.TYPE_CHECKING:  # type checkers cannot follow a generated class
    ClassifierConfig = dg.Config
else:
    #: Every TrainConfig knob (feature groups, n-grams, network, optimisation), generated from TrainConfig.
    ClassifierConfig = config_class_for(
        TrainConfig, "ClassifierConfig", "Feature groups and training knobs: every field of fraud_assets.model.TrainConfig."
    )


class EvaluationConfig(dg.Config):
    """How the decision threshold is chosen on validation (max_f1, precision or recall with target),
    and on how many splits to evaluate: ``repeats`` > 1 re-splits the data with the next seeds, retrains
    the same configuration on each and reports mean ± sd (the candidate itself is the first split)."""

    threshold_strategy: str = "max_f1"
    target: float | None = None
    repeats: int = 1


class PromotionConfig(dg.Config):
    """The challenger may be this much worse in test F1 than the champion and still be promoted."""

    tolerance: float = 0.0


#: Promotions by other runs during one comparison after which production_model stops re-comparing.
MAX_CHAMPION_CHANGES = 5


def run_output(context: dg.AssetExecutionContext, asset: str, entry: str = "dagster/uri") -> str:
    """Where ``asset`` was written for this run (or another metadata ``entry`` of it): from its
    materialisation in this run when there is one (a retrain reads only what it produced itself,
    however many retrains overlap), else from its latest one (a run of only the later steps)."""
    key = dg.AssetKey(asset)
    records = context.instance.get_records_for_run(context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    events = [r.event_log_entry for r in records if r.event_log_entry.dagster_event.asset_key == key]
    event = events[-1] if events else context.instance.get_latest_materialization_event(key)
    if event is None:
        raise dg.Failure(f"{asset} was never materialised: run the retrain from training_dataset")
    return str(event.asset_materialization.metadata[entry].value)


def run_name(context: dg.AssetExecutionContext) -> str:
    """Sortable and unique per run: the UTC start time, then the run id (pruning orders candidates by it)."""
    from fraud_assets.model.io import RUN_TIME_FORMAT

    started = context.instance.get_run_record_by_id(context.run.run_id)
    when = (
        dt.datetime.fromtimestamp(started.start_time, dt.timezone.utc)
        if started and started.start_time
        else dt.datetime.now(dt.timezone.utc)
    )
    return f"{when.strftime(RUN_TIME_FORMAT)}-{context.run.run_id[:8]}"


def _latest_per_partition(instance: dg.DagsterInstance, asset: str, keys: list[str], entry: str) -> dict[str, str]:
    """The metadata ``entry`` of each partition's latest materialisation of ``asset`` (where recorded)."""
    latest: dict[str, str] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=keys), limit=1000, cursor=cursor
        )
        for record in result.records:  # newest first
            event = record.asset_materialization
            if event is not None and event.partition is not None and entry in event.metadata:
                latest.setdefault(event.partition, str(event.metadata[entry].value))
        if not result.has_more:
            return latest
        cursor = result.cursor


def check_partitions_current(instance: dg.DagsterInstance, keys: list[str], fingerprint: str, timezone: str) -> None:
    """Fail when some partitions' features were computed under other settings than the current ones.

    Why: changing ``FRAUD_EMBEDDING_MODEL``, ``FRAUD_EMBEDDING_BACKEND`` or the
    embedder's settings changes the fingerprint for new files only; training on
    old and new vectors together would mix two vector spaces without a word
    (or stop on a dimension mismatch). Changing ``FRAUD_TIMEZONE`` likewise
    shifts the hour and weekday of new files only. The fingerprint of each
    partition's latest ``message_embeddings`` materialisation, and the zone of
    its latest ``time_features`` one, are compared with the current ones;
    partitions without one recorded are not judged.
    """
    checks = (
        (MESSAGE_EMBEDDINGS, "fingerprint", fingerprint, "embedding model, setting or backend"),
        (TIME_FEATURES, "timezone", timezone, "FRAUD_TIMEZONE"),
    )
    for asset, entry, current, what in checks:
        latest = _latest_per_partition(instance, asset, keys, entry)
        stale = sorted(key for key, value in latest.items() if value != current)
        if stale:
            raise dg.Failure(
                f"{asset} of {len(stale)} of {len(keys)} partitions were computed with another {what} "
                f"({entry} {latest[stale[0]]}, now {current}): {', '.join(stale[:5])}"
                f"{', ...' if len(stale) > 5 else ''}. Re-materialise {asset} for them (a backfill in the UI), "
                "then retrain."
            )


@dg.asset(group_name="training", deps=list(per_file_outputs()), kinds={"polars"})
def training_dataset(context: dg.AssetExecutionContext, fraud: FraudSettings, embedder: EmbedderResource) -> dg.MaterializeResult:
    """All ingested partitions joined, de-duplicated across files and split train/validation/test."""
    from fraud_assets.dataset import build_training_dataset

    storage = fraud.storage
    keys = ingested_partitions(storage, context.instance.get_dynamic_partitions(message_files.name))
    if not keys:
        raise dg.Failure("no ingested partitions: drop files into the landing folder and run ingest first")
    check_partitions_current(context.instance, keys, embedder.get_embedder().fingerprint, fraud.timezone)
    dataset, summary = build_training_dataset(*load_partitions(storage, keys), seed=fraud.seed)
    path = storage.asset_path(TRAINING_DATASET, run_name(context))  # one file per run: retrains never share one
    storage.write_json({"partitions": keys, "summary": summary}, path.with_suffix(".json"))
    storage.write_parquet(dataset, path)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(dataset, path),
            "rows": dataset.height,
            "partitions": len(keys),
            "partitions_fingerprint": partitions_fingerprint(keys),
            "summary": dg.MetadataValue.json(summary),
        }
    )


@dg.asset(group_name="training", deps=[training_dataset], kinds={"pytorch"}, pool="gpu", op_tags=GPU_OP_TAGS)
def fraud_classifier(
    context: dg.AssetExecutionContext,
    config: ClassifierConfig,
    fraud: FraudSettings,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    """The torch classifier (embedding + time + n-gram + text statistics), with TensorBoard logs."""
    from fraud_assets.model import train_classifier
    from fraud_assets.model.io import save_model

    storage = fraud.storage
    dataset_path = as_path(run_output(context, TRAINING_DATASET))
    lineage = storage.read_json(dataset_path.with_suffix(".json"))
    name = run_name(context)
    train_config = TrainConfig.from_dict(config.model_dump())
    with storage.local_copy(dataset_path) as local, storage.local_folder(storage.tensorboard_dir / name) as tensorboard:
        # lazily: each training stage reads the columns it needs (the vectors only for the deep part)
        model = train_classifier(pl.scan_parquet(local), train_config, tensorboard_dir=tensorboard, log=context.log.info)
    embedding = embedder.get_embedder()
    card = {
        "run_name": name,
        "training_dataset": str(dataset_path),
        "embedding_model": embedding.model_name,
        "embedding_fingerprint": embedding.fingerprint,
        "embedding_settings": {
            "max_seq_length": embedder.max_seq_length,
            "normalize": embedder.normalize,
            "backend": embedder.backend,
        },
        "partitions": lineage["partitions"],
        "timezone": fraud.timezone,  # the zone of its time features: scoring computes them in the same one
        "dataset_summary": lineage["summary"],
        "history": model.history,
        "best_epoch": model.best_epoch,
        "selection": model.selection,
    }
    folder = save_model(model, storage.candidates_dir / name, card)
    best = model.history[model.best_epoch - 1] if model.history else {}
    return dg.MaterializeResult(
        metadata={
            "dagster/uri": str(folder),
            "run_name": name,
            "partitions_fingerprint": partitions_fingerprint(lineage["partitions"]),
            "epochs": len(model.history),
            "best_epoch": model.best_epoch,
            "val_f1": float(best.get("val_f1", float("nan"))),
            "blend": model.selection.get("blend", {}).get("chosen", "n/a"),
            "tensorboard": str(storage.tensorboard_dir / name),
        }
    )


@dg.asset(group_name="training", deps=[fraud_classifier], kinds={"scikitlearn"})
def evaluation_report(context: dg.AssetExecutionContext, config: EvaluationConfig, fraud: FraudSettings) -> dg.MaterializeResult:
    """Test metrics at a validation-chosen threshold, baselines on the same split, plots and report."""
    from fraud_assets.evaluation import evaluate, with_repeats, write_report
    from fraud_assets.model.io import is_promoted, load_model, update_card

    storage = fraud.storage
    candidate_dir = run_output(context, FRAUD_CLASSIFIER)
    if is_promoted(candidate_dir, storage.production_pointer):
        # Its card gets this evaluation's threshold and metrics, and production.json pins the card's hash.
        raise dg.Failure(
            f"the latest fraud_classifier, {candidate_dir}, is the model in production: evaluating it again "
            "would change the files production.json pins. To evaluate with other settings, retrain "
            "(the retrain job, or fraud_classifier with evaluation_report)."
        )
    model, card = load_model(candidate_dir)
    dataset = storage.read_parquet(as_path(card["training_dataset"]))  # the split this candidate was trained on
    val, test = (dataset.filter(pl.col("split") == s) for s in ("validation", "test"))
    test_proba, raw_test_proba = model.predict_proba_before_after(test)
    if model.selection.get("blend", {}).get("chosen") == "uncalibrated":
        raw_test_proba = None  # nothing was calibrated: no before / after to show
    result = evaluate(
        dataset,
        model.validation_proba(val),  # held-out where parts were refitted on validation
        test_proba,
        history=card.get("history"),
        strategy=config.threshold_strategy,
        target=config.target,
        raw_test_proba=raw_test_proba,
    )
    if config.repeats > 1:
        result = with_repeats(
            result,
            _repeated(
                dataset,
                result,
                seed=fraud.seed,
                strategy=card.get("dataset_summary", {}).get("split_strategy"),
                model=model,
                config=config,
                log=context.log.info,
            ),
        )
    for folder in (storage.reports_dir / card["run_name"], storage.reports_dir / "latest"):
        write_report(result, folder, storage)
    update_card(candidate_dir, threshold=result.metrics["model"]["threshold"], metrics=result.metrics)
    model_metrics, baselines = result.metrics["model"], result.metrics["baselines"]
    images = "\n\n".join(
        f"**{name}**\n\n![{name}](data:image/png;base64,{base64.b64encode(png).decode()})" for name, png in result.plots.items()
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/uri": str(storage.reports_dir / card["run_name"]),
            **{k: model_metrics[k] for k in ("f1", "precision", "recall", "pr_auc", "roc_auc", "threshold")},
            "tfidf_logreg_f1": baselines["tfidf_logreg"]["f1"],
            "embedding_logreg_f1": baselines["embedding_logreg"]["f1"],
            "report": dg.MetadataValue.md(result.report_md),
            "plots": dg.MetadataValue.md(images),
            "candidate": candidate_dir,
        }
    )


def _repeated(dataset: pl.DataFrame, first, *, seed: int, strategy: str, model, config: EvaluationConfig, log) -> dict:
    """Mean ± sd over ``config.repeats`` splits: the candidate's own, plus retrains on re-splits with the next seeds."""
    from fraud_assets.repeats import repeated_evaluation, scores_of, summarise

    seeds = [seed + i for i in range(1, config.repeats)]
    runs = repeated_evaluation(dataset, model.config, seeds, strategy=config.threshold_strategy, target=config.target, log=log)
    own = {"seed": seed, "split_strategy": strategy, "scores": scores_of(first.metrics)}
    return summarise([own, *runs])


@dg.asset(
    group_name="training",
    deps=[evaluation_report],
    output_required=False,
    check_specs=[NOT_WORSE_THAN_CHAMPION],
)
def production_model(context: dg.AssetExecutionContext, config: PromotionConfig, fraud: FraudSettings):
    """The promoted model. Promotion is refused when the challenger is worse than the champion
    re-scored on the same test split; then the champion stays and the check says why.

    A refusal is an expected outcome, not an error: the check is a WARN and the run
    succeeds, so a night on which the challenger is simply not better stays green.
    """
    from fraud_assets.model.io import promote, prune_candidates, read_card, read_pointer_bytes

    storage = fraud.storage
    candidate_dir = run_output(context, EVALUATION_REPORT, "candidate")  # the candidate this run evaluated
    dataset = storage.read_parquet(as_path(read_card(candidate_dir)["training_dataset"]))
    for _ in range(MAX_CHAMPION_CHANGES):
        # Overlapping retrains (the schedule and a manual one) each compare with the champion of their
        # start; one promoted since this comparison began is compared with again, so a promotion never
        # replaces a champion it was not compared with (short of a promotion in the last instant).
        pointer_before = read_pointer_bytes(storage.production_pointer)
        decision = compare_with_champion(
            candidate_dir,
            storage.production_pointer,
            dataset,
            tolerance=config.tolerance,
            read_parquet=lambda path: storage.read_parquet(as_path(path)),
        )
        if not decision.promote or read_pointer_bytes(storage.production_pointer) == pointer_before:
            break
        context.log.info("another run promoted a model during the comparison: comparing with that one")
    yield dg.AssetCheckResult(
        check_name=NOT_WORSE_THAN_CHAMPION.name,
        passed=decision.promote,
        severity=dg.AssetCheckSeverity.WARN,
        description=decision.reason,
        metadata=decision.metadata,
    )
    if not decision.promote:
        context.log.warning(f"promotion refused: {decision.reason}")
        # refused candidates are pruned too, or a streak of refusals would fill the disk
        if pruned := prune_candidates(storage.candidates_dir, storage.production_pointer):
            context.log.info(f"removed {len(pruned)} old candidate(s): {', '.join(pruned)}")
        return
    pointer = promote(candidate_dir, storage.production_pointer)
    if pointer.get("replaced_unreadable"):
        context.log.warning(f"replaced an unreadable production pointer: {pointer['replaced_unreadable']}")
    pruned = prune_candidates(storage.candidates_dir, storage.production_pointer)
    yield dg.MaterializeResult(
        metadata={
            "dagster/uri": str(storage.production_pointer),
            "model": pointer["model"],
            "pruned_candidates": len(pruned),
            "replaced_unreadable_pointer": pointer.get("replaced_unreadable") or "",
            "promoted": decision.metadata.get("challenger"),
            "reason": decision.reason,
            **decision.metadata,
        }
    )
