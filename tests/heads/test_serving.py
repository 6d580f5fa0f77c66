"""The declarative serving state: operations, validation against the store, history, CLI."""

import json
import subprocess
import sys
import threading

import pytest

from heads import serving
from heads.config import parse_config
from heads.embedding import EmbedderIdentity
from heads.errors import ArtifactError, RegistryError
from heads.pipeline import train_head
from heads.registry import ModelStore
from heads.serving import Candidate, ServingState, Shadow
from tests.conftest import ROOT
from tests.fakes import HashTextEmbedder

FAST = {"epochs": 4, "early_stopping_patience": 2, "batch_size": 32}


class OtherEmbedder(HashTextEmbedder):
    def __init__(self):
        super().__init__()
        self.identity = EmbedderIdentity("other-encoder@2", "other-encoder", "2", 32)


@pytest.fixture(scope="module")
def versions(tmp_path_factory, clinc_subset):
    """Three versions of `intents` on the hash embedder and one on another embedder."""
    root = tmp_path_factory.mktemp("serving")
    store = ModelStore(root / "models")
    data = {k: str(v) for k, v in clinc_subset.items()}
    made = []
    for embedder in (HashTextEmbedder(), HashTextEmbedder(), HashTextEmbedder(), OtherEmbedder()):
        config = parse_config({"name": "intents", "data": data, "model": {"hidden_layers": [8]}, "training": FAST})
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
    assert serving.promote(s0, "b") == ServingState(primary="b", candidate=Candidate("c", 10), fallback="d")
    assert serving.promote(s0, "c").candidate is None
    assert serving.set_shadow(s0, "e", 1.0).shadows == (Shadow("b", 0.5), Shadow("e", 1.0))
    assert serving.set_shadow(s0, "b", None).shadows == ()
    with pytest.raises(RegistryError, match="not a shadow"):
        serving.set_shadow(s0, "zzz", None)
    assert serving.set_candidate(s0, None).candidate is None
    assert serving.set_fallback(s0, None).fallback is None
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
    store.change_serving("intents", lambda s: serving.set_shadow(s, v3, 0.5), reason="try v3")
    assert store.serving("intents").shadows == (Shadow(v3, 0.5),)
    state = store.change_serving("intents", serving.rollback, reason="rollback", rollback=True)
    assert state.primary == v2 and state.shadows == ()
    state = store.change_serving("intents", serving.rollback, reason="rollback", rollback=True)
    assert state.primary == v1
    assert [h["primary"] for h in store.serving("intents").history] == []  # back at the first state
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        store.change_serving("intents", serving.rollback, reason="rollback", rollback=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: lambda s: serving.set_shadow(s, v[1], 1.5), "fraction must be in"),
        (lambda v: lambda s: serving.set_candidate(s, v[1], 120), "percent must be in"),
        (lambda v: lambda s: serving.set_candidate(s, v[1], 10, "ip"), "candidate key must be one of"),
        (lambda v: lambda s: serving.set_candidate(s, v[0], 10), "must differ from the primary"),
        (lambda v: lambda s: serving.set_shadow(s, v[3], 1.0), "trained with embedder other-encoder@2"),
        (lambda v: lambda s: serving.set_fallback(s, v[3]), "needs embedder other-encoder@2"),
        (lambda v: lambda s: serving.set_shadow(s, "20990101T000000000Z-0000", 1.0), "has no version"),
        (lambda v: lambda s: serving.set_shadow(s, "../../etc", 1.0), "invalid version"),
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
                store.change_serving("intents", lambda s: serving.set_shadow(s, v[1 + i % 2], 0.5), reason=f"t{i}")
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
