"""A version's manifest.json: the typed Manifest reads every version written so far and writes the
very bytes the pipeline always wrote."""

import json

import pytest

from heads.embedding import EmbedderIdentity
from heads.errors import ArtifactError
from heads.manifest import Decision, Manifest

# As heads/pipeline.py wrote it before the Manifest type (its dict, dumped with sort_keys).
CURRENT = {
    "model": "intents",
    "version": "20261129T202552855Z-bf7f",
    "created_at": "2026-11-29T20:25:52+00:00",
    "labels": ["balance", "oos", "transfer"],
    "decision": {"threshold": 0.19673779998954974, "reject_label": "oos", "policy": "target_oos_recall", "reason": "r"},
    "architecture": {"type": "mlp", "hidden_layers": [256], "activation": "relu", "dropout": 0.3},
    "embedder": {"model_id": "enc@1", "name": "enc", "version": "1", "dim": 8},
    "data": {"train": {"source": "train.csv", "rows": 30, "sha256": "ab"}},
    "metrics": {"accuracy": 0.9, "model": "intents"},
    "baseline": {"label_distribution": {"oos": 3}, "confidence_histogram": [0] * 10, "centroid": None},
    "training_config": {"name": "intents", "training": {"epochs": 8}},
    "code_version": "83163f4-dirty",
    "format_version": 1,
    "files": {"head.npz": "00", "metrics.json": "11"},
}
# Written before drift baselines and "ngram" heads existed, and by hand (no policy, no reason).
OLDER = {
    "model": "intents",
    "version": "v1",
    "labels": ["a", "b"],
    "decision": {"threshold": 0.0, "reject_label": None},
    "architecture": {"hidden_layers": [], "activation": "relu", "dropout": 0.0},
    "embedder": {"model_id": "enc@1", "name": "enc", "version": "1", "dim": 8},
    "format_version": 1,
    "files": {"head.npz": "00"},
}
NGRAM = {
    **OLDER,
    "architecture": {"type": "ngram", "scheme": "s", "ngram_range": [2, 4], "buckets": 16},
    "embedder": None,
}


def write(folder, raw) -> str:
    folder.mkdir(exist_ok=True)
    text = json.dumps(raw, indent=2, sort_keys=True)
    (folder / "manifest.json").write_text(text)
    return text


@pytest.mark.parametrize("raw", [CURRENT, OLDER, NGRAM], ids=["current", "older", "ngram"])
def test_every_manifest_reads_and_writes_back_byte_for_byte(tmp_path, raw):
    text = write(tmp_path / "v", raw)
    manifest = Manifest.read(tmp_path / "v")
    manifest.write(tmp_path)
    assert (tmp_path / "manifest.json").read_text() == text
    assert manifest.to_dict() == raw


def test_fields_are_typed(tmp_path):
    write(tmp_path / "v", CURRENT)
    manifest = Manifest.read(tmp_path / "v")
    assert manifest.labels == ("balance", "oos", "transfer") and manifest.head_type == "mlp"
    assert manifest.embedder == EmbedderIdentity("enc@1", "enc", "1", 8)
    assert manifest.decision == Decision(0.19673779998954974, "oos", "target_oos_recall", "r")
    assert manifest.decision_rule().reject_label == "oos"
    write(tmp_path / "old", OLDER)
    older = Manifest.read(tmp_path / "old")
    assert older.head_type == "mlp" and older.baseline == {} and older.metrics == {} and older.created_at is None
    write(tmp_path / "ngram", NGRAM)
    assert Manifest.read(tmp_path / "ngram").embedder is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([CURRENT], "manifest.json is not a JSON object"),
        ({**CURRENT, "format_version": 2}, "unsupported format_version 2"),
        ({k: v for k, v in CURRENT.items() if k not in ("labels", "files")}, "has no 'labels', 'files'"),
        ({**CURRENT, "architecture": "mlp"}, "'architecture' is a str"),
        ({**CURRENT, "files": {"head.npz": "00", "../serving.json": "00"}}, "every checksummed file"),
        ({**CURRENT, "files": {"metrics.json": "00"}}, "lists no head.npz"),
        ({**CURRENT, "embedder": None}, "names no embedder for a head that scores embeddings"),
        ({**CURRENT, "embedder": {"model_id": "enc@1", "dim": "8"}}, "a string model_id and an integer dim"),
        (
            {**CURRENT, "embedder": {"model_id": "enc@1#cls", "dim": 8}},
            "embedder model_id 'enc@1#cls': unknown features",
        ),
        ({**CURRENT, "decision": {"threshold": "high"}}, "cannot build the head: ValueError"),
    ],
)
def test_a_malformed_manifest_is_an_artifact_error_naming_the_version(tmp_path, raw, message):
    write(tmp_path / "v", raw)
    with pytest.raises(ArtifactError, match=message) as raised:
        Manifest.read(tmp_path / "v")
    assert str(raised.value).startswith(f"{tmp_path / 'v'}: ")


def test_an_absent_or_unparsable_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Manifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json is not valid JSON"):
        Manifest.read(tmp_path)
    # as when it was read as strict UTF-8 text: invalid UTF-8, a byte order mark, UTF-16, an
    # encoded surrogate are not valid JSON, whichever parser tries first
    text = json.dumps(CURRENT)
    for data in (
        b'{"model": "\xff"}',
        b"\xef\xbb\xbf" + text.encode(),
        text.encode("utf-16"),
        b'{"model": "\xed\xa0\x80"}',
    ):
        (tmp_path / "manifest.json").write_bytes(data)
        with pytest.raises(ArtifactError, match="manifest.json is not valid JSON"):
            Manifest.read(tmp_path)


def test_what_only_the_standard_library_parses_still_reads(tmp_path):
    # manifest.write emits NaN and Infinity for such metrics; orjson refuses them, the fallback reads them
    metrics = {"accuracy": float("nan"), "ratio": float("inf")}
    write(tmp_path / "v", {**CURRENT, "metrics": metrics})
    assert "NaN" in (tmp_path / "v" / "manifest.json").read_text()
    read = Manifest.read(tmp_path / "v").metrics
    assert read["accuracy"] != read["accuracy"] and read["ratio"] == float("inf")


def test_a_large_manifest_reads_as_the_standard_library_reads_it(tmp_path):
    # the parser of thousands of manifests at a router's start must agree with json on every value
    centroid = [(-1) ** i * (i + 0.1) / 7e3 for i in range(1152)]
    raw = {**CURRENT, "baseline": {**CURRENT["baseline"], "centroid": centroid}, "labels": ["é", "\u2603", "a\\b"]}
    text = write(tmp_path / "v", raw)
    manifest = Manifest.read(tmp_path / "v")
    assert manifest.to_dict() == json.loads(text)
    assert manifest.baseline["centroid"] == centroid
