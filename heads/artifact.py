"""A trained head version: a self-contained, immutable folder, loaded with numpy only.

    <store>/<model>/<version>/
        manifest.json       labels, decision rule, architecture (its "type": "mlp" or "ngram",
                            and for "ngram" the featurizer's parameters), embedder id and
                            dimension (null for "ngram" heads, which need no embedder), exact
                            training config, data fingerprints, metrics, code version, and the
                            sha256 of every other file in the folder
        head.npz            weights, float32: W0, b0, W1, b1, ... ("mlp"), or W, b ("ngram")
        config.yaml, metrics.json, per_class.csv, confusion_matrix.png/.csv, top_confusions.json,
        threshold_tradeoff.png/.json, history.png/.json

A version is written in a staging folder and renamed into place (atomic), and loading checks
every checksum, so a partial or corrupted version is refused whole, never half-loaded.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import secrets
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedder.convert import sha256_file
from heads.decision import DecisionRule
from heads.errors import ArtifactError
from heads.network import DenseHead
from heads.ngram import NgramFeaturizer, NgramHead

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "head.npz"


def new_version_id(now: dt.datetime | None = None) -> str:
    """Sorts by creation time (UTC, millisecond) with a random suffix against collisions."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-" + secrets.token_hex(2)


@dataclass(frozen=True)
class HeadArtifact:
    model: str
    version: str
    path: Path
    manifest: dict
    head: DenseHead | NgramHead
    rule: DecisionRule

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
        """The embedder the head was trained on; None when it needs none."""
        return self.manifest["embedder"]["model_id"] if self.needs_embeddings else None

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics", {})

    def predict_proba(self, embeddings: np.ndarray | None = None, texts: Sequence[str] | None = None) -> np.ndarray:
        """float32 [n, classes]. Pass what the caller has: an "mlp" head scores `embeddings`, an
        "ngram" head scores `texts` (raw or normalised: it normalises them itself); each ignores
        the other argument, so a caller with both can treat every head alike."""
        if self.needs_embeddings:
            if embeddings is None:
                raise ValueError(f"{self.model} {self.version} scores sentence embeddings: pass embeddings")
            return self.head.probabilities(embeddings)
        if texts is None:
            raise ValueError(f"{self.model} {self.version} is an n-gram head and scores texts: pass texts")
        return self.head.probabilities(texts)


def save_weights(head: DenseHead | NgramHead) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **head.arrays())
    return buffer.getvalue()


def stage_version(staging: Path, head: DenseHead | NgramHead, manifest: dict) -> None:
    """Write the weights and the manifest (with checksums of every file already in `staging`)."""
    (staging / WEIGHTS).write_bytes(save_weights(head))
    files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {**manifest, "format_version": FORMAT_VERSION, "files": files}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


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
) -> HeadArtifact:
    """Load and verify a version folder. Raises ArtifactError (naming the folder and the problem)
    for every version that cannot serve: partial, corrupt, unreadable, of an unknown format, with a
    malformed manifest, or bound to another embedder."""
    path = Path(path)
    try:
        manifest = _read_manifest(path)
        for name, expected in manifest["files"].items():
            if not (path / name).is_file():
                raise ArtifactError(f"{path}: {name} is missing (partial version)")
            if sha256_file(path / name) != expected:
                raise ArtifactError(f"{path}: {name} does not match its checksum (corrupt version)")
        _check_embedder(path, manifest, expected_embedder, expected_dim)
        head, rule = _build_head(path, manifest)
    except OSError as exc:  # an unreadable folder or file: the router user lacks permission, a bad mount
        what = Path(exc.filename).name if exc.filename else "it"
        raise ArtifactError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    return HeadArtifact(manifest["model"], manifest["version"], path, manifest, head, rule)


# What the rest of the code reads from a manifest without checking: its shape is checked once, here.
_FIELDS = {"model": str, "version": str, "labels": list, "decision": dict, "files": dict}
_OPTIONAL = {"architecture": dict, "metrics": dict, "embedder": (dict, type(None))}


def _read_manifest(path: Path) -> dict:
    """The version's manifest, checked for the format version and the shape of every field that
    serving reads (ArtifactError otherwise); OSError when it cannot be read."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{path}: no {MANIFEST} (not a model version, or a partial one)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: {MANIFEST} is not a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: unsupported format_version {manifest.get('format_version')!r}")
    missing = [key for key in _FIELDS if key not in manifest]
    if missing:
        raise ArtifactError(f"{path}: {MANIFEST} has no {', '.join(map(repr, missing))}")
    for key, kind in (_FIELDS | _OPTIONAL).items():
        if key in manifest and not isinstance(manifest[key], kind):
            raise ArtifactError(f"{path}: {MANIFEST}: {key!r} is a {type(manifest[key]).__name__}")
    if not all(isinstance(label, str) for label in manifest["labels"]):
        raise ArtifactError(f"{path}: {MANIFEST}: every label must be a string")
    if not isinstance(manifest["decision"].get("reject_label"), str | None):
        raise ArtifactError(f"{path}: {MANIFEST}: the reject label must be a string or null")
    if any(not isinstance(name, str) or Path(name).name != name for name in manifest["files"]):
        raise ArtifactError(f"{path}: {MANIFEST}: every checksummed file must be a plain file name")
    if WEIGHTS not in manifest["files"]:
        raise ArtifactError(f"{path}: the manifest lists no {WEIGHTS}")
    return manifest


def _check_embedder(path: Path, manifest: dict, expected_embedder: str | None, expected_dim: int | None) -> None:
    if manifest.get("architecture", {}).get("type", "mlp") != "mlp":
        return  # an "ngram" head uses no embeddings, so no running embedder can be the wrong one for it
    embedder = manifest.get("embedder")
    if not isinstance(embedder, dict):
        raise ArtifactError(f"{path}: the manifest names no embedder for a head that scores embeddings")
    model_id, dim = embedder.get("model_id"), embedder.get("dim")
    if not isinstance(model_id, str) or not isinstance(dim, int) or isinstance(dim, bool):
        raise ArtifactError(f"{path}: {MANIFEST}: the embedder needs a string model_id and an integer dim")
    if expected_embedder is not None and model_id != expected_embedder:
        raise ArtifactError(
            f"{path}: trained with embedder {model_id}, but the running embedder is "
            f"{expected_embedder}; retrain the head against it or serve the embedder it was trained with"
        )
    if expected_dim is not None and dim != expected_dim:
        raise ArtifactError(f"{path}: expects {dim}-d embeddings, the running embedder gives {expected_dim}-d")


def _build_head(path: Path, manifest: dict) -> tuple[DenseHead | NgramHead, DecisionRule]:
    architecture = manifest.get("architecture", {})
    head_type = architecture.get("type", "mlp")  # versions written before "ngram" existed have none
    if head_type not in ("mlp", "ngram"):
        raise ArtifactError(f"{path}: unknown head type {head_type!r}")
    try:
        with np.load(path / WEIGHTS, allow_pickle=False) as arrays:
            if head_type == "ngram":
                head = NgramHead.from_arrays(dict(arrays), NgramFeaturizer.from_description(architecture))
            else:
                head = DenseHead.from_arrays(dict(arrays), architecture["activation"])
        labels = tuple(manifest["labels"])
        decision = manifest["decision"]
        rule = DecisionRule(labels, float(decision["threshold"]), decision.get("reject_label"))
    except (LookupError, ValueError, TypeError, AttributeError, OSError) as exc:
        raise ArtifactError(f"{path}: cannot build the head: {exc!r}") from None
    if head.num_classes != len(labels):
        raise ArtifactError(f"{path}: {head.num_classes} outputs for {len(labels)} labels")
    if head_type == "mlp" and head.input_dim != manifest["embedder"]["dim"]:
        raise ArtifactError(
            f"{path}: input size {head.input_dim} differs from the embedder dimension {manifest['embedder']['dim']}"
        )
    return head, rule
