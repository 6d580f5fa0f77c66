"""The declarative serving state: operations, validation against the store, history, CLI."""

import json
import subprocess
import sys
import threading

import pytest

from heads import serving_state
from heads.config import parse_config
from heads.embedding import EmbedderIdentity
from heads.errors import ArtifactError, RegistryError
from heads.layout import SERVING_FILE
from heads.pipeline import train_head
from heads.registry import ModelStore
from heads.serving_state import Candidate, ServingState, Shadow
from tests.conftest import ROOT
from tests.fakes import HashTextEmbedder
from tests.file_access import obeying_permissions

FAST = {"epochs": 4, "early_stopping_patience": 2, "batch_size": 32}


class OtherEmbedder(HashTextEmbedder):
    def __init__(self):
        super().__init__()
        self.identity = EmbedderIdentity("other-encoder@2", "other-encoder", "2", 32)


@pytest.fixture(scope="module")
def versions(tmp_path_factory, clinc_subset):
    """Three versions of `intents` on the hash embedder (the third on its sentence embedding alone,
    the others on the default features) and one on another embedder."""
    root = tmp_path_factory.mktemp("serving")
    store = ModelStore(root / "models")
    data = {k: str(v) for k, v in clinc_subset.items()}
    made = []
    trained_on = [(HashTextEmbedder(), "layers-4-6"), (HashTextEmbedder(), "layers-4-6")]
    trained_on += [(HashTextEmbedder(), "sentence"), (OtherEmbedder(), "layers-4-6")]
    for embedder, features in trained_on:
        model = {"type": "mlp", "hidden_layers": [8], "features": features}
        config = parse_config({"name": "intents", "data": data, "model": model, "training": FAST})
        made.append(
            train_head(config, store=store, cache_dir=root / "cache", embedder=embedder, promote=False)["version"]
        )
    return store, made


@pytest.fixture
def store(versions, tmp_path):
    import shutil

    shutil.copytree(versions[0].root, tmp_path / "models")
    return ModelStore(tmp_path / "models"), versions[1]


def test_operations_are_pure_state_transitions():
    s0 = ServingState(primary="a", shadows=(Shadow("b", 0.5),), candidate=Candidate("c", 10), fallback="d")
    assert serving_state.promote(s0, "b") == ServingState(primary="b", candidate=Candidate("c", 10), fallback="d")
    assert serving_state.promote(s0, "c").candidate is None
    assert serving_state.set_shadow(s0, "e", 1.0).shadows == (Shadow("b", 0.5), Shadow("e", 1.0))
    assert serving_state.set_shadow(s0, "b", None).shadows == ()
    with pytest.raises(RegistryError, match="not a shadow"):
        serving_state.set_shadow(s0, "zzz", None)
    assert serving_state.set_candidate(s0, None).candidate is None
    assert serving_state.set_fallback(s0, None).fallback is None
    assert ServingState.from_dict(s0.to_dict()) == s0
    assert s0.versions() == ["a", "b", "c", "d"]


def test_issue3_pointer_files_still_read():
    legacy = {"primary": "v1", "updated_at": "2026-11-01T00:00:00+00:00", "history": [{"primary": "v0"}]}
    state = ServingState.from_dict(legacy)
    assert state.primary == "v1" and state.shadows == () and state.history == ({"primary": "v0"},)


def test_history_and_rollback_on_the_store(store):
    store, (v1, v2, v3, _) = store
    store.set_serving("intents", v1)
    store.set_serving("intents", v2)
    store.change_serving("intents", lambda s: serving_state.set_shadow(s, v3, 0.5), reason="try v3")
    assert store.serving("intents").shadows == (Shadow(v3, 0.5),)
    state = store.change_serving("intents", serving_state.rollback, reason="rollback", rollback=True)
    assert state.primary == v2 and state.shadows == ()
    state = store.change_serving("intents", serving_state.rollback, reason="rollback", rollback=True)
    assert state.primary == v1
    assert [h["primary"] for h in store.serving("intents").history] == []  # back at the first state
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        store.change_serving("intents", serving_state.rollback, reason="rollback", rollback=True)


def test_versions_on_other_features_of_the_same_model_serve_together(store):
    """One embedding service serves every feature set of its model (embedder/features.py)."""
    store, v = store
    store.set_serving("intents", v[0])
    assert store.load("intents", v[2]).embedder_id == "hash-encoder@1"
    assert store.load("intents", v[0]).embedder_id == "hash-encoder@1#layers-4-6"
    for change in (
        lambda s: serving_state.set_shadow(s, v[2], 1.0),
        lambda s: serving_state.set_candidate(serving_state.set_shadow(s, v[2], None), v[2], 10),
        lambda s: serving_state.set_fallback(s, v[2]),
    ):
        store.change_serving("intents", change, reason="test")
    state = store.serving("intents")
    assert (state.primary, state.candidate.version, state.fallback) == (v[0], v[2], v[2])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: lambda s: serving_state.set_shadow(s, v[1], 1.5), "fraction must be in"),
        (lambda v: lambda s: serving_state.set_candidate(s, v[1], 120), "percent must be in"),
        (lambda v: lambda s: serving_state.set_candidate(s, v[1], 10, "ip"), "candidate key must be one of"),
        (lambda v: lambda s: serving_state.set_candidate(s, v[0], 10), "must differ from the primary"),
        (lambda v: lambda s: serving_state.set_shadow(s, v[3], 1.0), "trained with embedder other-encoder@2"),
        (lambda v: lambda s: serving_state.set_fallback(s, v[3]), "needs embedder other-encoder@2"),
        (lambda v: lambda s: serving_state.set_shadow(s, "20990101T000000000Z-0000", 1.0), "has no version"),
        (lambda v: lambda s: serving_state.set_shadow(s, "../../etc", 1.0), "invalid version"),
    ],
)
def test_invalid_states_are_refused_and_nothing_changes(store, change, message):
    store, v = store
    store.set_serving("intents", v[0])
    before = (store.root / "intents" / "serving.json").read_text()
    with pytest.raises(RegistryError, match=message):
        store.change_serving("intents", change(v), reason="bad")
    assert (store.root / "intents" / "serving.json").read_text() == before


def test_a_corrupt_version_cannot_be_promoted(store):
    store, v = store
    store.set_serving("intents", v[0])
    weights = store.version_dir("intents", v[1]) / "head.npz"
    weights.chmod(0o644)
    weights.write_bytes(b"broken")
    with pytest.raises(ArtifactError, match="checksum"):
        store.set_serving("intents", v[1])
    assert store.serving_version("intents") == v[0]


def test_concurrent_changes_are_serialised(store):
    store, v = store
    store.set_serving("intents", v[0])
    errors = []

    def flip(i):
        try:
            for _ in range(5):
                store.change_serving(
                    "intents", lambda s: serving_state.set_shadow(s, v[1 + i % 2], 0.5), reason=f"t{i}"
                )
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=flip, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = store.serving("intents")
    assert len(state.history) == 20  # each change after the first promotion recorded, none lost to a race


def heads_cli(store, *args):
    # The CLI addresses <store>/<tenant>/: here the tenant folder is the test's store itself.
    location = ["--store", str(store.root.parent), "--tenant", store.root.name]
    return subprocess.run(
        [sys.executable, "-m", "heads", *args, *location],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_edits_the_state(store):
    store, (v1, v2, v3, other) = store
    assert heads_cli(store, "promote", "intents", v1).returncode == 0
    assert heads_cli(store, "shadow", "intents", v2, "--fraction", "0.25").returncode == 0
    assert heads_cli(store, "ab", "intents", v3, "--percent", "10").returncode == 0
    assert heads_cli(store, "fallback", "intents", v2, "--reason", "safety net").returncode == 0
    status = json.loads(heads_cli(store, "status", "intents").stdout)
    assert status["primary"] == v1 and status["shadows"] == [{"version": v2, "fraction": 0.25}]
    assert status["candidate"] == {"version": v3, "percent": 10.0, "key": "client_id"}
    assert status["fallback"] == v2 and status["reason"] == "safety net" and len(status["history"]) == 3
    bad = heads_cli(store, "shadow", "intents", other)
    assert bad.returncode == 2 and "other-encoder@2" in bad.stderr and "Traceback" not in bad.stderr
    assert heads_cli(store, "ab", "intents", "--off").returncode == 0
    assert heads_cli(store, "rollback", "intents").returncode == 0
    assert json.loads(heads_cli(store, "status", "intents").stdout)["candidate"]["version"] == v3


# --- a version or pointer that cannot serve is a HeadsError, and an unreadable folder stays listed ---


MALFORMED = {
    "no labels": lambda m: {k: v for k, v in m.items() if k != "labels"},
    "a list": lambda m: [m],
    "files as a list": lambda m: {**m, "files": sorted(m["files"])},
    "a file outside the folder": lambda m: {**m, "files": {**m["files"], "../serving.json": "0" * 64}},
    "architecture as a string": lambda m: {**m, "architecture": "mlp"},
    "embedder without an id": lambda m: {**m, "embedder": {"dim": 32}},
    "embedder dim as a string": lambda m: {**m, "embedder": {**m["embedder"], "dim": "32"}},
    "labels that are no strings": lambda m: {**m, "labels": [1] * len(m["labels"])},
    "decision as a list": lambda m: {**m, "decision": []},
    "a threshold that is no number": lambda m: {**m, "decision": {**m["decision"], "threshold": "high"}},
    "a reject label that is no string": lambda m: {**m, "decision": {**m["decision"], "reject_label": 3}},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_manifest_is_an_artifact_error(store, case):
    """Only an ArtifactError, naming the version: what the router isolates per model and the CLI
    prints without a traceback (before, several of these were KeyError or AttributeError)."""
    store, (v1, *_) = store
    manifest = store.version_dir("intents", v1) / "manifest.json"
    manifest.chmod(0o644)
    manifest.write_text(json.dumps(MALFORMED[case](json.loads(manifest.read_text()))))
    with pytest.raises(ArtifactError, match=f"{v1}: "):
        store.load("intents", v1)


def test_the_cli_names_a_malformed_version_without_a_traceback(store):
    store, (v1, *_) = store
    manifest = store.version_dir("intents", v1) / "manifest.json"
    manifest.chmod(0o644)
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "architecture": "mlp"}))
    shown = heads_cli(store, "show", "intents", v1)
    assert shown.returncode == 2 and "'architecture' is a str" in shown.stderr and "Traceback" not in shown.stderr


@pytest.mark.parametrize("content", [b"[]", b'{"primary": "v", "shadows": [1]}', b'{"candidate": {}}', b"{", b"\xff"])
def test_a_malformed_serving_state_is_a_registry_error(store, content):
    store, _ = store
    (store.root / "intents" / SERVING_FILE).write_bytes(content)
    with pytest.raises(RegistryError, match="unreadable serving state"):
        store.serving("intents")


def test_unreadable_folders_stay_listed_and_loading_them_says_why(store):
    """As a user who may not read them (root's permission override dropped for this thread): an
    unreadable version or model is listed, never silently dropped (a model that vanished from the
    listing would stop serving unreported), and loading it raises a HeadsError that says why."""
    store, (v1, v2, *_) = store
    store.set_serving("intents", v1)
    version, model = store.version_dir("intents", v1), store.root / "intents"
    with obeying_permissions():
        version.chmod(0)
        try:
            assert v1 in store.versions("intents") and store.models() == ["intents"]
            with pytest.raises(ArtifactError, match=f"{v1}: cannot read manifest.json \\(Permission denied\\)"):
                store.load("intents")
            model.chmod(0)
            assert store.models() == ["intents"] and store.fingerprint()  # listed, and polling goes on
            with pytest.raises(RegistryError, match="cannot list it \\(Permission denied\\)"):
                store.versions("intents")
            with pytest.raises(RegistryError, match="cannot read the serving state \\(Permission denied\\)"):
                store.serving("intents")
        finally:
            model.chmod(0o755)
            version.chmod(0o755)
        assert store.load("intents").version == v1 and v2 in store.versions("intents")
