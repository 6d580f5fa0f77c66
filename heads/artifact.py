"""A trained head version: a self-contained, immutable folder, loaded with numpy only.

    <store>/<model>/<version>/      (heads/layout.py)
        manifest.json       labels, decision rule, architecture (its "type": "mlp" or "ngram",
                            and for "ngram" the featurizer's parameters), embedder id and
                            dimension (null for "ngram" heads, which need no embedder), exact
                            training config, data fingerprints, metrics, code version, and the
                            sha256 of every other file in the folder (heads/manifest.py)
        head.npz            weights, float32: W0, b0, W1, b1, ... ("mlp"), or W, b ("ngram"), read
                            in place from a memory map (heads/mapped_weights.py)
        config.yaml, metrics.json, per_class.csv, confusion_matrix.png/.csv, top_confusions.json,
        threshold_tradeoff.png/.json, history.png/.json, and since model selection and
        calibration: model_selection.json, calibration.json, reliability_diagram.png; since the
        release gate: heldout_predictions.json (heads/paired_evidence.py)

A version is written in a staging folder and renamed into place (atomic), and loading checks
that every file is there and every checksum (a router loading thousands of heads checks the
weights' only: it never reads the reports; and for a model it does not serve yet, before the
head's first answer rather than at load: heads/weights_check.py), so a partial or corrupted
version is refused whole, never half-loaded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import secrets
import shutil
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedder.convert import sha256_file
from embedder.features import parse_features, split_embedding_id
from heads import mapped_weights
from heads.decision import DecisionRule
from heads.errors import ArtifactError
from heads.known_checksums import KnownChecksums
from heads.layout import MANIFEST, WEIGHTS
from heads.manifest import Manifest
from heads.mapped_weights import RESIDENT, MappedFile, load_weights
from heads.network import DenseHead
from heads.ngram import NgramFeaturizer, NgramHead
from heads.weights_check import WeightsCheck, identity, weights_match


def new_version_id(now: dt.datetime | None = None) -> str:
    """Sorts by creation time (UTC, millisecond) with a random suffix against collisions."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-" + secrets.token_hex(2)


@dataclass(frozen=True)
class HeadArtifact:
    model: str
    version: str
    path: Path
    manifest: Manifest
    head: DenseHead | NgramHead
    rule: DecisionRule
    # The map the head's weights view (None: read into memory): each answer touches it, so that
    # the process's bound on mapped weights (mapped_weights.RESIDENT) releases the least used.
    weights_map: MappedFile | None = field(default=None, compare=False, repr=False)
    # The weights' checksum, when loading left it for the first need (heads/weights_check.py).
    weights_check: WeightsCheck | None = field(default=None, compare=False, repr=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.rule.labels

    @property
    def head_type(self) -> str:
        """ "mlp" (scores sentence embeddings) or "ngram" (scores the texts themselves)."""
        return "mlp" if isinstance(self.head, DenseHead) else "ngram"

    @property
    def needs_embeddings(self) -> bool:
        """False for an "ngram" head: it answers without the embedding service."""
        return self.head.needs_embeddings

    @property
    def embedder_id(self) -> str | None:
        """The embedding id the head was trained on (the model, and the feature set unless it is
        the sentence embedding: embedder/features.py); None when it needs none."""
        return self.manifest.embedder.model_id if self.needs_embeddings else None

    @property
    def metrics(self) -> dict:
        return self.manifest.metrics

    def for_serving(self) -> HeadArtifact:
        """This version without the records that serving never reads: the training baseline (drift
        reads it from the store), the training config, the data fingerprints, the code version and
        the files' checksums (verified by now; the weights' is kept by `weights_check` where
        loading left it for later). At thousands of heads per router process they were most of a
        loaded version's Python objects."""
        kept = dataclasses.replace(self.manifest, baseline={}, training_config={}, data={}, code_version=None, files={})
        return dataclasses.replace(self, manifest=kept)

    def predict_proba(self, embeddings: np.ndarray | None = None, texts: Sequence[str] | None = None) -> np.ndarray:
        """float32 [n, classes]. Pass what the caller has: an "mlp" head scores `embeddings`, an
        "ngram" head scores `texts` (raw or normalised: it normalises them itself); each ignores
        the other argument, so a caller with both can treat every head alike. ArtifactError when
        the weights, checked now if loading left that for later, do not match their checksum."""
        check = self.weights_check
        if check is not None and not check.verified:
            check.ensure()
        if self.weights_map is not None:
            RESIDENT.touch(self.weights_map)
        if self.needs_embeddings:
            if embeddings is None:
                raise ValueError(f"{self.model} {self.version} scores sentence embeddings: pass embeddings")
            return self.head.probabilities(embeddings)
        if texts is None:
            raise ValueError(f"{self.model} {self.version} is an n-gram head and scores texts: pass texts")
        return self.head.probabilities(texts)


def save_weights(head: DenseHead | NgramHead) -> bytes:
    """The head's arrays as an .npz whose arrays can be memory-mapped (heads/mapped_weights.py)."""
    return mapped_weights.save_weights(head.arrays())


def stage_version(staging: Path, head: DenseHead | NgramHead, manifest: Manifest) -> None:
    """Write the weights and the manifest (with checksums of every file already in `staging`)."""
    (staging / WEIGHTS).write_bytes(save_weights(head))
    files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest.with_files(files).write(staging)


def commit_version(staging: Path, target: Path) -> None:
    """Make the staged folder read-only and rename it into place; refuses to overwrite."""
    if target.exists():
        raise ArtifactError(f"{target} already exists: versions are immutable")
    for p in staging.iterdir():
        p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, target)


def discard(staging: Path) -> None:
    if staging.exists():
        for p in staging.iterdir():
            p.chmod(stat.S_IWUSR | stat.S_IRUSR)
        shutil.rmtree(staging, ignore_errors=True)


def load_version(
    path: Path,
    *,
    expected_embedder: str | None = None,
    expected_dim: int | None = None,
    verify_reports: bool = True,
    known_checksums: KnownChecksums | None = None,
    defer_weights_check: bool = False,
) -> HeadArtifact:
    """Load and verify a version folder. Raises ArtifactError (naming the folder and the problem)
    for every version that cannot serve: partial, corrupt, unreadable, of an unknown format, with a
    malformed manifest, or bound to another embedder. `verify_reports=False` (a router loading
    thousands of heads) checks that every file is there but the checksum of the weights only:
    the reports (plots, CSVs, about half a version's bytes) are never read while serving, and the
    registry verified them all when the version was made to serve. `known_checksums`: the host's
    record of weights already verified (heads/known_checksums.py), which it then needs not hash.
    `defer_weights_check`: leave the weights' checksum to the returned artifact's
    `weights_check`, which its first answer (or whoever calls `ensure()` first) computes; the
    rest is checked now."""
    path = Path(path)
    check = None
    try:
        manifest = Manifest.read(path)
        present = _regular_files(path)
        # the file the head is built from, whose checksum is checked now or later (a missing one
        # is named as such below)
        loaded = identity(os.stat(path / WEIGHTS)) if WEIGHTS in present else None
        for name, expected in manifest.files.items():
            if name not in present:
                raise ArtifactError(f"{path}: {name} is missing (partial version)")
            if name == WEIGHTS and defer_weights_check:
                check = WeightsCheck(path / name, expected, loaded, known_checksums)
            elif (verify_reports or name == WEIGHTS) and not _matches(path / name, expected, known_checksums):
                raise ArtifactError(f"{path}: {name} does not match its checksum (corrupt version)")
        _check_embedder(path, manifest, expected_embedder, expected_dim)
        head, rule, weights_map = _build_head(path, manifest)
        if loaded is not None and identity(os.stat(path / WEIGHTS)) != loaded:
            # replaced (or rewritten) between the stat and the map: the file the checksum vouched
            # for, or will, may not be the one the head holds
            raise ArtifactError(f"{path}: {WEIGHTS} changed while it was loaded (retried at the next scan)")
    except OSError as exc:  # an unreadable folder or file: the router user lacks permission, a bad mount
        what = Path(exc.filename).name if exc.filename else "it"
        raise ArtifactError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    return HeadArtifact(manifest.model, manifest.version, path, manifest, head, rule, weights_map, check)


def _regular_files(folder: Path) -> set[str]:
    """The names of the regular files in `folder` (or links to one): one directory read where a
    stat per listed file took a tenth of the time to load 10,000 heads of 17 files."""
    with os.scandir(folder) as entries:
        return {entry.name for entry in entries if entry.is_file()}


def _matches(file: Path, expected: str, known: KnownChecksums | None) -> bool:
    if file.name == WEIGHTS:
        return weights_match(file, expected, known)
    return sha256_file(file) == expected


def _check_embedder(path: Path, manifest: Manifest, expected_embedder: str | None, expected_dim: int | None) -> None:
    embedder = manifest.embedder
    if manifest.head_type != "mlp" or embedder is None:
        return  # an "ngram" head uses no embeddings, so no running embedder can be the wrong one for it
    # The head's embedding id names a model and a feature set of it (embedder/features.py); the
    # running embedder is named by its model and sentence dimension.
    model_id, features = split_embedding_id(embedder.model_id)
    if expected_embedder is not None and model_id != expected_embedder:
        raise ArtifactError(
            f"{path}: trained with embedder {embedder.model_id}, but the running embedder is "
            f"{expected_embedder}; retrain the head against it or serve the embedder it was trained with"
        )
    if expected_dim is not None and embedder.dim != (given := parse_features(features).dim(expected_dim)):
        raise ArtifactError(
            f"{path}: expects {embedder.dim}-d embeddings ({features}), the running embedder gives {given}-d"
        )


def _build_head(path: Path, manifest: Manifest) -> tuple[DenseHead | NgramHead, DecisionRule, MappedFile | None]:
    architecture, head_type = manifest.architecture, manifest.head_type
    if head_type not in ("mlp", "ngram"):
        raise ArtifactError(f"{path}: unknown head type {head_type!r}")
    try:
        arrays, weights_map = load_weights(path / WEIGHTS)  # mapped in place: shared by the host's processes
        if head_type == "ngram":
            head = NgramHead.from_arrays(arrays, NgramFeaturizer.from_description(architecture))
        else:
            head = DenseHead.from_arrays(arrays, architecture["activation"])
        rule = manifest.decision_rule()
    except (LookupError, ValueError, TypeError, AttributeError, OSError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path}: cannot build the head: {exc!r}") from None
    if head.num_classes != len(manifest.labels):
        raise ArtifactError(f"{path}: {head.num_classes} outputs for {len(manifest.labels)} labels")
    if head_type == "mlp" and head.input_dim != manifest.embedder.dim:
        raise ArtifactError(
            f"{path}: input size {head.input_dim} differs from the embedder dimension {manifest.embedder.dim}"
        )
    return head, rule, weights_map
