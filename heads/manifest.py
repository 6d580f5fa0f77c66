"""A version's manifest.json: what the version is, read and written in one place.

    model, version, created_at     the names it was trained under, and when
    labels, decision               its classes, and the threshold and reject label that serve
    architecture                   the head type ("mlp" or "ngram"; absent: "mlp", as written
                                   before "ngram" existed) and what rebuilds its forward pass;
                                   since model selection, also the head family chosen ("mlp",
                                   "logistic" or "ensemble", all served as one "mlp" DenseHead),
                                   its members, and the temperature (and, where the data has
                                   an out-of-scope class, its reject_shift) folded into its weights
    embedder                       the embedder it was trained on (null for "ngram" heads)
    data, metrics, baseline        data fingerprints, evaluation, and the drift baseline
                                   (absent in versions written before drift existed)
    training_config, code_version  how to train it again (a config of a version from before
                                   feature sets has no model.features: it was trained on
                                   "sentence", which the embedder's model_id says too; one
                                   from before selection.candidates, of model.type auto, also
                                   trained the ensemble: add candidates: [mlp, logistic,
                                   ensemble] to train it so again)
    format_version, files          the format, and the sha256 of every other file of the version

Reading checks the shape of every field that serving reads (ArtifactError, naming the version,
otherwise); the record-keeping fields (data, metrics' contents, baseline, training_config, ...)
are kept as written. Writing gives the JSON that versions have always had, so every version
already in a store keeps loading.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from embedder.features import UnknownFeatures, parse_features, split_embedding_id
from heads.decision import DecisionRule
from heads.embedding import EmbedderIdentity
from heads.errors import ArtifactError
from heads.layout import MANIFEST, WEIGHTS, manifest_path

FORMAT_VERSION = 1
DEFAULT_HEAD_TYPE = "mlp"  # versions written before "ngram" existed record no type

# The shape checked once, on reading: what the code reads from a manifest without checking again.
_REQUIRED = {"model": str, "version": str, "labels": list, "decision": dict, "files": dict}
_OPTIONAL = {"architecture": dict, "metrics": dict, "embedder": (dict, type(None))}
# Written only when present: a version written before one of them existed keeps its shape.
_RECORDS = ("created_at", "architecture", "data", "metrics", "baseline", "training_config", "code_version")


@dataclass(frozen=True)
class Decision:
    """How probabilities become an answer, and how training chose the threshold."""

    threshold: float
    reject_label: str | None = None
    policy: str | None = None  # heads/threshold.py; absent in versions made by hand
    reason: str | None = None

    def to_dict(self) -> dict:
        """In the order of the file's keys (sorted), as readers of the JSON have always seen them."""
        optional = {"policy": self.policy, "reason": self.reason}
        present = {k: v for k, v in optional.items() if v is not None}
        return {**present, "reject_label": self.reject_label, "threshold": self.threshold}


@dataclass(frozen=True)
class Manifest:
    """A version's manifest (the fields are described at the top of this module)."""

    model: str
    version: str
    labels: tuple[str, ...]
    decision: Decision
    embedder: EmbedderIdentity | None = None  # None: the head scores texts, no embedder
    architecture: dict = field(default_factory=dict)
    created_at: str | None = None  # ISO 8601, UTC
    data: dict = field(default_factory=dict)  # per split: source, rows, sha256
    metrics: dict = field(default_factory=dict)  # the evaluation summary (what `train` prints)
    baseline: dict = field(default_factory=dict)  # for drift (inferencedb/monitoring_report.py)
    training_config: dict = field(default_factory=dict)  # heads/config.py config_to_dict
    code_version: str | None = None  # git describe of the code that trained it
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256 (set by `with_files`)
    format_version: int = FORMAT_VERSION

    @property
    def head_type(self) -> str:
        """ "mlp" (scores sentence embeddings) or "ngram" (scores the texts themselves); whatever the
        version records otherwise, which loading refuses."""
        return self.architecture.get("type", DEFAULT_HEAD_TYPE)

    def decision_rule(self) -> DecisionRule:
        """ValueError for a rule that cannot serve (a threshold without a reject label)."""
        return DecisionRule(self.labels, self.decision.threshold, self.decision.reject_label)

    def with_files(self, files: dict[str, str]) -> Manifest:
        return dataclasses.replace(self, files=dict(files))

    def to_dict(self) -> dict:
        records = {name: getattr(self, name) for name in _RECORDS}
        return {
            "model": self.model,
            "version": self.version,
            "labels": list(self.labels),
            "decision": self.decision.to_dict(),
            "embedder": embedder_to_dict(self.embedder),
            **{name: value for name, value in records.items() if value not in (None, {})},
            "format_version": self.format_version,
            "files": dict(self.files),
        }

    def write(self, version_folder: Path) -> None:
        manifest_path(version_folder).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def read(cls, version_folder: Path) -> Manifest:
        """The manifest of the version in `version_folder`. ArtifactError (naming the folder) when it
        is absent, not JSON, of another format or malformed; OSError when it cannot be read."""
        path = Path(version_folder)
        file = manifest_path(path)
        if not file.is_file():
            raise ArtifactError(f"{path}: no {MANIFEST} (not a model version, or a partial one)")
        try:
            raw = _parse(file.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{path}: {MANIFEST} is not valid JSON ({exc})") from None
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: object, path: Path) -> Manifest:
        """The manifest in `raw` (parsed JSON) of the version in `path` (named by every error)."""
        _check_shape(raw, path)
        architecture = raw.get("architecture", {})
        head_type = architecture.get("type", DEFAULT_HEAD_TYPE)
        records = {name: raw[name] for name in _RECORDS if raw.get(name) is not None}
        records["baseline"] = raw.get("baseline") or {}  # null, as {}: no baseline
        return cls(
            model=raw["model"],
            version=raw["version"],
            labels=tuple(raw["labels"]),
            decision=_decision(raw["decision"], path),
            embedder=_embedder(raw.get("embedder"), head_type == DEFAULT_HEAD_TYPE, path),
            **records,
            files=dict(raw["files"]),
            format_version=raw["format_version"],
        )


def _parse(data: bytes) -> object:
    """A manifest's JSON. orjson parses one 6 times as fast as the standard library (the drift
    baseline's 1,152-float centroid is most of its 45 KB): a router reads thousands at start, and
    the standard library's parser was a third of the time to load 10,000 heads. What orjson refuses
    and the standard library reads (NaN, which `write` emits for a NaN metric; Infinity) goes to the
    standard library, so every manifest that loaded before loads alike, its errors worded as before.
    One difference remains: an integer beyond 64 bits comes back as a float (no manifest field that
    serving reads holds one)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8"))  # strict UTF-8 as read_text() was: no BOM, no surrogates


def embedder_to_dict(identity: EmbedderIdentity | None) -> dict | None:
    """The manifest's "embedder" (its keys in the file's order, sorted): None for a head that needs
    no embedder."""
    if identity is None:
        return None
    return {"dim": identity.dim, "model_id": identity.model_id, "name": identity.name, "version": identity.version}


@functools.lru_cache(maxsize=1024)
def _plain_file_name(name: str) -> bool:
    # Cached: every version lists the same few names, and a router checks thousands of manifests.
    return Path(name).name == name


def _check_shape(raw: object, path: Path) -> None:
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: {MANIFEST} is not a JSON object")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: unsupported format_version {raw.get('format_version')!r}")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ArtifactError(f"{path}: {MANIFEST} has no {', '.join(map(repr, missing))}")
    for key, kind in (_REQUIRED | _OPTIONAL).items():
        if key in raw and not isinstance(raw[key], kind):
            raise ArtifactError(f"{path}: {MANIFEST}: {key!r} is a {type(raw[key]).__name__}")
    if not all(isinstance(label, str) for label in raw["labels"]):
        raise ArtifactError(f"{path}: {MANIFEST}: every label must be a string")
    if not isinstance(raw["decision"].get("reject_label"), str | None):
        raise ArtifactError(f"{path}: {MANIFEST}: the reject label must be a string or null")
    if any(not isinstance(name, str) or not _plain_file_name(name) for name in raw["files"]):
        raise ArtifactError(f"{path}: {MANIFEST}: every checksummed file must be a plain file name")
    if WEIGHTS not in raw["files"]:
        raise ArtifactError(f"{path}: the manifest lists no {WEIGHTS}")


def _decision(raw: dict, path: Path) -> Decision:
    try:
        threshold = float(raw["threshold"])
    except (KeyError, TypeError, ValueError) as exc:  # worded as when the loader found it, building the head
        raise ArtifactError(f"{path}: cannot build the head: {exc!r}") from None
    return Decision(threshold, raw.get("reject_label"), raw.get("policy"), raw.get("reason"))


def _embedder(raw: dict | None, required: bool, path: Path) -> EmbedderIdentity | None:
    """The embedder identity; required (with a string model_id and an integer dim) for a head that
    scores embeddings. Any other head needs none: what it records is kept when well-formed."""
    if raw is None:
        if required:
            raise ArtifactError(f"{path}: the manifest names no embedder for a head that scores embeddings")
        return None
    model_id, dim = raw.get("model_id"), raw.get("dim")
    if not isinstance(model_id, str) or not isinstance(dim, int) or isinstance(dim, bool):
        if required:
            raise ArtifactError(f"{path}: {MANIFEST}: the embedder needs a string model_id and an integer dim")
        return None
    try:  # the feature set after "#" (embedder/features.py): one the router can ask for
        parse_features(split_embedding_id(model_id)[1])
    except UnknownFeatures as exc:
        raise ArtifactError(f"{path}: {MANIFEST}: embedder model_id {model_id!r}: {exc}") from None
    return EmbedderIdentity(model_id, raw.get("name", ""), raw.get("version", ""), dim)
