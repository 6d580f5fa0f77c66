"""Train, evaluate and store one head version from a config.

    load data -> check it -> embed (cached) -> train each candidate family (Keras), calibrate it
    and choose its threshold on validation -> keep the best (heads/selection.py) -> evaluate on
    test -> write reports and the held-out answers (heads/paired_evidence.py) -> commit the
    version folder atomically

An "ngram" head (model.type) trains on the texts themselves: the embedding step is skipped and
no embedder is created or contacted; every other step is the same.

Nothing reaches the store unless every step succeeded: the version is built in a staging
folder that is renamed into place at the very end, or removed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from heads import evaluation_report
from heads.artifact import commit_version, discard, new_version_id, stage_version
from heads.calibration import ece_noise_floor, expected_calibration_error, reliability_bins
from heads.config import FeedbackSource, HeadConfig, SqlSource, config_to_dict
from heads.data import Dataset, check_label_support, concatenate, read_file, read_sql, unknown_labels
from heads.decision import DecisionRule
from heads.embedding import (
    DatasetEmbeddingCache,
    EmbedderIdentity,
    FeatureEmbedder,
    LocalEmbedder,
    RemoteEmbedder,
    TextEmbedder,
)
from heads.errors import ConfigError, DataError
from heads.manifest import Decision, Manifest
from heads.metrics import confusion_matrix, per_class, summary
from heads.names import check_model_name
from heads.ngram import NgramHead
from heads.paired_evidence import write_heldout
from heads.registry import ModelStore
from heads.selection import Selection, train_and_select
from heads.threshold import resolve_policy, tradeoff_curve
from heads.trainer import make_trainers
from inferencedb.feedback import LABELLED_EXAMPLES

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Splits:
    train: Dataset
    validation: Dataset
    test: Dataset | None


def _when(value: str, default: dt.datetime, name: str) -> dt.datetime:
    if not value:
        return default
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"data feedback {name} must be an ISO 8601 date or datetime, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def load_source(source, config: HeadConfig, *, tenant: str | None = None) -> Dataset:
    """The rows of one data source. `tenant`: the tenant the model is trained for (that of the
    store it is trained into), whose feedback a feedback source without a tenant reads."""
    if isinstance(source, tuple):
        return concatenate([load_source(part, config, tenant=tenant) for part in source])
    if isinstance(source, FeedbackSource):
        tenant = source.tenant or tenant
        if tenant is None:
            raise ConfigError(
                f"data feedback on {source.model} names no tenant, and the store trained into is no tenant's: "
                "give the source a tenant"
            )
        params = {
            "tenant": tenant,
            "model": source.model,
            "since": _when(source.since, dt.datetime(1970, 1, 1, tzinfo=dt.UTC), "since"),
            "until": _when(source.until, dt.datetime.now(dt.UTC), "until"),
        }
        name = f"feedback on {source.model} ({params['since']:%Y-%m-%d} to {params['until']:%Y-%m-%d})"
        return read_sql(source.dsn or os.environ.get("DATABASE_URL", ""), LABELLED_EXAMPLES, params, source=name)
    if isinstance(source, SqlSource):
        # An empty DSN lets libpq take the connection from PGHOST, PGUSER, PGPASSWORD, ...
        dsn = source.dsn or os.environ.get("DATABASE_URL", "")
        return read_sql(dsn, source.query, text_column=source.text_column, label_column=source.label_column)
    return read_file(source, text_column=config.data.text_column, label_column=config.data.label_column)


def stratified_split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(train, validation) with `fraction` of every label in validation and at least one
    example of every label left in train."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(data.labels):
        by_label.setdefault(label, []).append(i)
    val_idx: list[int] = []
    for label in sorted(by_label):
        rows = np.array(by_label[label])
        rng.shuffle(rows)
        take = min(len(rows) - 1, max(1, round(fraction * len(rows))))
        val_idx.extend(rows[:take].tolist())
    chosen = set(val_idx)
    train_idx = [i for i in range(len(data)) if i not in chosen]

    def subset(idx: list[int], name: str) -> Dataset:
        return Dataset([data.texts[i] for i in idx], [data.labels[i] for i in idx], f"{data.source} ({name})")

    return subset(train_idx, "train split"), subset(sorted(val_idx), "validation split")


def load_splits(config: HeadConfig, *, tenant: str | None = None) -> Splits:
    """The train, validation and test rows; `tenant` as in `load_source`."""
    train = load_source(config.data.train, config, tenant=tenant)
    check_label_support(train, config.data.min_examples_per_label)
    if config.data.validation is not None:
        validation = load_source(config.data.validation, config, tenant=tenant)
    elif config.data.validation_fraction > 0:
        train, validation = stratified_split(train, config.data.validation_fraction, config.training.seed)
    else:
        raise ConfigError(
            "give data.validation or a data.validation_fraction > 0: early stopping and the threshold need it"
        )
    test = load_source(config.data.test, config, tenant=tenant) if config.data.test is not None else None
    known = set(train.labels)
    for part in (validation, test):
        if part is not None and (extra := unknown_labels(part, known)):
            raise DataError(f"{part.source}: label(s) not in the training data: {', '.join(map(repr, extra[:10]))}")
    return Splits(train, validation, test)


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return sha or "unknown"


def make_embedder(config: HeadConfig) -> TextEmbedder:
    if config.embedder_address:
        return RemoteEmbedder(config.embedder_address)
    return LocalEmbedder(config.embedder_model)


@dataclass(frozen=True)
class Inputs:
    """What the trainer and the head score for each split: embeddings, or the texts themselves
    for a head that needs no embedder (then `embedder` is None)."""

    train: np.ndarray | list[str]
    validation: np.ndarray | list[str]
    test: np.ndarray | list[str] | None
    embedder: EmbedderIdentity | None
    embedding_seconds: float


def prepare_inputs(
    splits: Splits, needs_embeddings: bool, config: HeadConfig, cache_dir: Path, embedder: TextEmbedder | None
) -> Inputs:
    if not needs_embeddings:
        return Inputs(
            splits.train.texts, splits.validation.texts, splits.test.texts if splits.test else None, None, 0.0
        )
    own_embedder = embedder is None
    embedder = embedder or make_embedder(config)
    try:
        features = FeatureEmbedder(embedder, config.model.features)
        cache = DatasetEmbeddingCache(cache_dir)
        t0 = time.perf_counter()
        x_train = cache.embed(splits.train.texts, features, description="embedding train")
        x_val = cache.embed(splits.validation.texts, features, description="embedding validation")
        x_test = cache.embed(splits.test.texts, features, description="embedding test") if splits.test else None
        embedding_seconds = time.perf_counter() - t0
    finally:
        if own_embedder:
            embedder.close()
    return Inputs(x_train, x_val, x_test, features.identity, embedding_seconds)


def describe_architecture(selection: Selection) -> dict:
    """The manifest's "architecture": the head type and what rebuilds its forward pass ("mlp":
    every dense family, which serves as one `DenseHead`), the family chosen, and the temperature
    (and reject shift) folded into the weights."""
    chosen = selection.chosen
    calibration = chosen.calibration
    calibrated = {"temperature": round(calibration.temperature, 6)}
    if calibration.reject is not None:
        calibrated["reject_shift"] = round(calibration.reject_shift, 6)
    if isinstance(chosen.head, NgramHead):
        return {"type": "ngram", **chosen.head.featurizer.describe(), **calibrated}
    settings = chosen.settings
    return {
        "type": "mlp",
        "family": chosen.family,
        "hidden_layers": settings["hidden_layers"],  # of one member
        "members": settings["members"],
        "activation": settings["activation"],
        "dropout": settings["dropout"],
        **calibrated,
    }


def calibration_report(selection: Selection, splits: dict[str, tuple]) -> tuple[dict, dict]:
    """(the method, its fitted numbers, the ECE of each split before and after calibration and the
    ECE a perfectly calibrated head would read on it, for metrics.json; the reliability bins of each
    split). `splits`: name -> (inputs, label indices)."""
    chosen = selection.chosen
    figures: dict = chosen.calibration.describe()
    bins: dict = {}
    for name, (x, y) in splits.items():
        bins[name] = {}
        for when, head in (("before", chosen.trained.head), ("after", chosen.head)):
            probs = head.probabilities(x)
            figures[f"ece_{name}_{when}"] = round(expected_calibration_error(probs, y), 4)
            bins[name][when] = reliability_bins(probs, y)
            if when == "after":  # what a perfectly calibrated head would read on these rows
                figures[f"ece_{name}_floor"] = round(ece_noise_floor(probs), 4)
    return figures, bins


def drift_baseline(train: Dataset, val_probs: np.ndarray, train_inputs, reject_label: str | None) -> dict:
    """What live traffic is compared with to measure drift (inferencedb/monitoring_report.py): the training label
    counts, the histogram of top probabilities on the validation split (10 buckets of 0.1), and
    the centroid of the training embeddings (embedding heads only)."""
    buckets = np.minimum((val_probs.max(axis=1) * 10).astype(int), 9)
    centroid = (
        np.asarray(train_inputs, dtype=np.float64).mean(axis=0).tolist()
        if isinstance(train_inputs, np.ndarray)
        else None
    )
    return {
        "label_distribution": dict(sorted(train.label_counts().items())),
        "confidence_histogram": np.bincount(buckets, minlength=10).tolist(),
        "centroid": centroid,
        "reject_label": reject_label,
    }


def train_head(
    config: HeadConfig,
    *,
    store: ModelStore,
    cache_dir: Path,
    promote: bool | None = None,
    embedder: TextEmbedder | None = None,
) -> dict:
    """Train one version; return the evaluation summary (also printed by the CLI).

    `promote`: None serves the new version only if the model has no serving version yet;
    True always points the model at it; False never does.
    """
    check_model_name(config.name)
    started = time.perf_counter()
    splits = load_splits(config, tenant=store.tenant)
    labels = tuple(sorted(set(splits.train.labels)))
    index = {label: i for i, label in enumerate(labels)}

    trainers = make_trainers(config)
    needs_embeddings = next(iter(trainers.values())).needs_embeddings
    inputs = prepare_inputs(splits, needs_embeddings, config, cache_dir, embedder)
    y_train = np.array([index[label] for label in splits.train.labels])
    y_val = np.array([index[label] for label in splits.validation.labels])

    policy = resolve_policy(config.threshold, set(labels), splits.validation.labels)
    selection = train_and_select(config, trainers, inputs.train, y_train, inputs.validation, y_val, labels, policy)
    chosen, choice = selection.chosen, selection.chosen.threshold
    trained, head = chosen.trained, chosen.head  # `head` is calibrated: it serves
    rule = DecisionRule.serving(labels, choice.threshold, config.threshold.reject_label)
    val_probs = head.probabilities(inputs.validation)

    evaluated = splits.test or splits.validation
    x_eval = inputs.test if splits.test else inputs.validation
    y_eval = np.array([index[label] for label in evaluated.labels])
    eval_probs = head.probabilities(x_eval)
    split_name = "test" if splits.test else "validation"
    calibration, reliability = calibration_report(
        selection, {"validation": (inputs.validation, y_val), split_name: (x_eval, y_eval)}
    )
    y_pred, _ = rule.decide(eval_probs)
    metrics = summary(y_eval, y_pred, list(labels), config.threshold.reject_label)
    version = new_version_id()

    staging = store.new_staging_dir(config.name)
    try:
        stats = per_class(y_eval, y_pred, len(labels))
        evaluation_report.write_per_class_csv(staging / "per_class.csv", list(labels), stats)
        evaluation_report.write_confusion(
            staging,
            confusion_matrix(y_eval, y_pred, len(labels)),
            list(labels),
            f"{config.name} {version}: {'test' if splits.test else 'validation'} split, row-normalised",
        )
        evaluation_report.write_history(staging, trained.history)
        # What the release gate pairs with another version's answers (heads/paired_evidence.py).
        write_heldout(staging, split_name, evaluated.texts, evaluated.labels, [rule.label_of(int(i)) for i in y_pred])
        evaluation_report.write_selection(staging, selection.report())
        evaluation_report.write_reliability(staging, reliability, calibration)
        if config.threshold.reject_label in labels and policy != "none":
            evaluation_report.write_tradeoff(
                staging,
                tradeoff_curve(val_probs, y_val, labels, config.threshold.reject_label),
                tradeoff_curve(eval_probs, y_eval, labels, config.threshold.reject_label) if splits.test else None,
                choice.threshold,
            )
        (staging / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
        result = {
            **{k: round(v, 4) for k, v in metrics.items()},
            "n_train": len(splits.train),
            "n_validation": len(splits.validation),
            "n_test": len(splits.test) if splits.test else 0,
            "evaluated_on": "test" if splits.test else "validation",
            "model": config.name,
            "version": version,
            "labels": len(labels),
            "threshold": round(choice.threshold, 4),
            "threshold_policy": choice.policy,
            "epochs": trained.epochs_run,
            "best_epoch": trained.best_epoch,
            "head_type": "ngram" if isinstance(head, NgramHead) else "mlp",
            "family": chosen.family,
            "selection": selection.summary(),
            "calibration": calibration["method"],
            "temperature": calibration["temperature"],
            **({"reject_shift": calibration["reject_shift"]} if "reject_shift" in calibration else {}),
            "ece_before": calibration[f"ece_{split_name}_before"],
            "ece_after": calibration[f"ece_{split_name}_after"],
            "ece_validation_before": calibration["ece_validation_before"],
            "ece_validation_after": calibration["ece_validation_after"],
            "ece_floor": calibration[f"ece_{split_name}_floor"],
            "embedding_seconds": round(inputs.embedding_seconds, 1),
            "training_seconds": round(selection.training_seconds, 1),  # every candidate's
        }
        (staging / "metrics.json").write_text(json.dumps(result, indent=2))
        manifest = Manifest(
            model=config.name,
            version=version,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            labels=labels,
            decision=Decision(choice.threshold, rule.reject_label, choice.policy, choice.reason),
            architecture=describe_architecture(selection),
            embedder=inputs.embedder,
            data={
                name: {"source": part.source, "rows": len(part), "sha256": part.fingerprint()}
                for name, part in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))
                if part is not None
            },
            metrics=result,
            baseline=drift_baseline(splits.train, val_probs, inputs.train, rule.reject_label),
            training_config=config_to_dict(config),
            code_version=code_version(),
        )
        stage_version(staging, head, manifest)
        commit_version(staging, store.version_dir(config.name, version))
    except BaseException:
        discard(staging)
        raise
    if promote or (promote is None and store.serving(config.name) is None):
        store.set_serving(config.name, version, reason="first version" if promote is None else "promoted at training")
        result["serving"] = True
    else:
        result["serving"] = False
    result["path"] = str(store.version_dir(config.name, version))
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    return result
