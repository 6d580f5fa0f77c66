import json
import logging
import os
import re
import shutil
import time
import types

import numpy as np
import pytest

from api.core import tenant_heads
from api.core.live_heads import LiveHeads
from api.core.tenant_heads import TenantHeads
from api.errors import NotFound
from heads import known_checksums, serving_state, weights_check
from heads.config import parse_config
from heads.errors import ArtifactError
from heads.known_checksums import KnownChecksums
from heads.pipeline import train_head
from heads.registry import ModelStore
from tests.api.conftest import FAST
from tests.fakes import HashTextEmbedder
from tests.file_access import obeying_permissions


def test_loads_every_serving_model(store):
    heads = LiveHeads(store)
    report = heads.refresh()
    assert sorted(heads.snapshot()) == ["intents", "plain"] and len(report.loaded) == 2
    assert heads.refresh().loaded == []  # nothing changed: nothing reloaded
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        heads.get("nope")


def test_a_worker_starting_after_its_sibling_hashes_no_weights_again(store, tmp_path, monkeypatch):
    hashed = []
    real = known_checksums.sha256_file
    monkeypatch.setattr(known_checksums, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    record = tmp_path / "spool" / known_checksums.FILE_NAME
    first = LiveHeads(store, known_checksums=KnownChecksums(record))
    assert len(first.refresh().loaded) == 2 and hashed == []  # a first load leaves the hashing for later
    assert first.check_weights() == 0 and hashed == ["head.npz", "head.npz"]
    second = LiveHeads(store, known_checksums=KnownChecksums(record))  # another worker, or its replacement
    assert len(second.refresh().loaded) == 2 and second.unchecked == 2
    assert second.check_weights() == 0 and len(hashed) == 2
    assert sorted(second.snapshot()) == ["intents", "plain"]


def _counting_hashes(monkeypatch) -> list[str]:
    hashed: list[str] = []
    real = weights_check.sha256_file
    monkeypatch.setattr(weights_check, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    return hashed


def test_a_first_load_checks_the_weights_before_the_first_answer_or_in_the_background(store, monkeypatch):
    hashed = _counting_hashes(monkeypatch)
    heads = LiveHeads(store)
    assert len(heads.refresh().loaded) == 2 and hashed == [] and heads.unchecked == 2
    intents = heads.get("intents").primary
    assert intents.weights_check.pending
    vector = np.zeros((1, intents.head.input_dim), np.float32)
    intents.predict_proba(vector)  # the first answer hashes its weights first
    intents.predict_proba(vector)
    assert hashed == ["head.npz"] and intents.weights_check.verified and heads.unchecked == 1
    assert heads.check_weights(deadline=time.monotonic() - 1) == 1  # no time left: plain's still to check
    assert heads.check_weights() == 0 and hashed == ["head.npz"] * 2 and heads.unchecked == 0
    heads.refresh(force=True)
    assert heads.unchecked == 0 and len(hashed) == 2  # the same versions: not checked again


def _damage(weights) -> bytes:
    original = weights.read_bytes()
    weights.chmod(0o644)
    damaged = bytearray(original)
    middle = len(damaged) // 2  # in the arrays' data: the zip layout still reads
    damaged[middle : middle + 64] = bytes(64)
    weights.write_bytes(bytes(damaged))
    return original


def test_weights_that_fail_their_deferred_check_take_the_model_out_until_repaired(store, caplog):
    weights = store.version_dir("intents", store.serving_version("intents")) / "head.npz"
    original = _damage(weights)
    heads = LiveHeads(store)
    assert heads.refresh().failed == {}  # loaded: the checksum waits for the first need
    primary = heads.get("intents").primary
    vector = np.zeros((1, primary.head.input_dim), np.float32)
    for _ in range(2):  # every answer refuses, the file hashed once
        with pytest.raises(ArtifactError, match="head.npz does not match its checksum"):
            primary.predict_proba(vector)
    with caplog.at_level(logging.ERROR, logger="api.core.live_heads"):
        # a failure a request found is withdrawn at once, though no time is left to hash anything
        assert heads.check_weights(deadline=time.monotonic() - 1) == 1  # plain's, still to check
        assert "does not match its checksum" in heads.errors["intents"]
        with pytest.raises(NotFound, match="failed to load: .*head.npz does not match its checksum"):
            heads.get("intents")
        assert heads.get("plain").primary.version  # the other model serves on
        report = heads.refresh()  # retried at every scan, checked at once: still refused, logged once
        assert "checksum" in report.failed["intents"] and "intents" not in heads.snapshot()
    logged = [r.getMessage() for r in caplog.records if "does not load" in r.getMessage()]
    assert len(logged) == 1 and "it is not served" in logged[0]
    weights.write_bytes(original)  # repaired in place
    report = heads.refresh()
    assert report.failed == {} and heads.errors == {} and heads.get("intents").primary.weights_check is None
    assert heads.get("intents").primary.predict_proba(vector).shape == (1, len(primary.labels))


def test_a_damaged_report_file_does_not_stop_a_head_from_serving(store):
    """A router verifies the weights' checksum, not the plots' (never read while serving); the
    registry still refuses to promote such a version."""
    primary = store.serving_version("intents")
    plot = store.version_dir("intents", primary) / "history.png"
    plot.chmod(0o644)
    plot.write_bytes(b"not a png")
    heads = LiveHeads(store)
    assert heads.refresh().failed == {} and heads.get("intents").primary.version == primary
    with pytest.raises(ArtifactError, match="history.png does not match its checksum"):
        store.load("intents", primary)
    plot.unlink()
    assert "history.png is missing" in LiveHeads(store).refresh().failed["intents"]  # partial: refused


def test_serving_heads_keep_no_baseline_and_map_their_weights(store):
    """Thousands of heads per process: serving keeps what answers a request; drift reads the
    baseline from the store, and the weights are views of a shared read-only map."""
    heads = LiveHeads(store)
    heads.refresh()
    primary = heads.get("intents").primary
    assert primary.manifest.baseline == {} and store.baseline("intents", primary.version)["label_distribution"]
    manifest = primary.manifest
    assert manifest.training_config == manifest.data == manifest.files == {} and manifest.code_version is None
    assert manifest.metrics["n_train"] and manifest.labels and manifest.created_at  # what /v1/models shows
    assert all(not w.flags.writeable for w in primary.head.weights)


def _second_version(store, clinc_subset, tmp_path):
    data = {k: str(v) for k, v in clinc_subset.items()}
    config = parse_config(
        {"name": "intents", "data": data, "model": {"type": "mlp", "hidden_layers": [8]}, "training": FAST}
    )
    return train_head(config, store=store, cache_dir=tmp_path / "cache", embedder=HashTextEmbedder(), promote=False)[
        "version"
    ]


def test_promotion_is_picked_up_without_restart(store, clinc_subset, tmp_path):
    heads = LiveHeads(store)
    heads.refresh()
    old = heads.get("intents").primary
    new_version = _second_version(store, clinc_subset, tmp_path)
    assert heads.refresh().loaded == []  # a new version alone does not serve
    store.set_serving("intents", new_version)
    report = heads.refresh()
    assert report.loaded == [f"intents: primary {new_version}"]
    assert heads.get("intents").primary.version == new_version
    assert old.version != new_version and old.head is not None  # a request holding `old` still works


def test_a_broken_new_version_keeps_the_old_one_serving(store, clinc_subset, tmp_path):
    heads = LiveHeads(store)
    heads.refresh()
    old_version = heads.get("intents").primary.version
    new_version = _second_version(store, clinc_subset, tmp_path)
    store.set_serving("intents", new_version)
    weights = store.version_dir("intents", new_version) / "head.npz"
    weights.chmod(0o644)
    weights.write_bytes(b"not a numpy file")
    report = heads.refresh()
    assert "intents" in report.failed and "checksum" in report.failed["intents"]
    assert heads.get("intents").primary.version == old_version
    assert "intents" in heads.errors


def test_a_state_synced_before_its_version_serves_once_the_files_arrive(store, clinc_subset, tmp_path):
    """A store synced file by file (`aws s3 sync`): the router's copy receives the new serving.json
    and the version's manifest before its weights. The state fails to load, the old version keeps
    serving, and the state is retried at every poll, so it serves once the rest of the files are
    there, though serving.json does not change again."""
    synced = ModelStore.for_tenant(tmp_path / "synced", "default")  # what the router reads
    shutil.copytree(store.root.parent, synced.root.parent, symlinks=True)
    heads = LiveHeads(synced)
    heads.refresh()
    old = heads.get("intents").primary.version
    new = _second_version(store, clinc_subset, tmp_path)  # trained and promoted at the source
    store.set_serving("intents", new)
    source, target = store.version_dir("intents", new), synced.version_dir("intents", new)
    target.mkdir()
    shutil.copy2(store.root / "intents" / "serving.json", synced.root / "intents" / "serving.json")
    shutil.copy2(source / "manifest.json", target / "manifest.json")
    for _ in range(3):  # polls while the weights are still on their way
        report = heads.refresh()
        assert "partial version" in report.failed["intents"] and report.loaded == []
        assert heads.get("intents").primary.version == old
    for path in source.iterdir():
        if not (target / path.name).exists():
            shutil.copy2(path, target / path.name)
    assert heads.refresh().loaded == [f"intents: primary {new}"]
    assert heads.get("intents").primary.version == new and heads.errors == {}
    assert heads.refresh().loaded == []  # loaded once: no reload at every poll afterwards


def test_a_poll_reads_only_the_models_that_changed_or_failed(store, monkeypatch):
    """Thousands of models per router: a poll reads the serving state of a model only when its
    serving.json changed or it failed to load, never the healthy models that did not change."""
    heads = LiveHeads(store)
    heads.refresh()
    read: list[str] = []
    serving = store.serving
    monkeypatch.setattr(store, "serving", lambda model: read.append(model) or serving(model))
    heads.refresh()
    assert read == []
    pointer = store.root / "plain" / "serving.json"
    original = pointer.read_text()
    pointer.write_text("{")
    for _ in range(3):
        heads.refresh()
    assert read == ["plain"] * 3  # retried at every poll; `intents`, healthy and unchanged, never read
    assert sorted(heads.snapshot()) == ["intents", "plain"]  # plain keeps serving its last good state
    pointer.write_text(original)
    read.clear()
    heads.refresh()
    heads.refresh()
    assert read == ["plain"] and heads.errors == {}
    read.clear()
    heads.refresh(force=True)  # the operator's reload reads them all
    assert sorted(read) == ["intents", "plain"]


def test_an_idle_poll_looks_at_the_store_generation_only(store, clinc_subset, tmp_path, monkeypatch):
    """10,000 models per router: while nothing changes a poll is one stat of the store's
    generation; a serving change through the registry bumps it and the next poll scans."""
    heads = TenantHeads(store.root.parent, rescan_interval_s=3600)
    new_version = _second_version(store, clinc_subset, tmp_path)  # trained, not serving: no bump
    heads.refresh()
    scans: list[int] = []
    fingerprint = ModelStore.fingerprint
    monkeypatch.setattr(ModelStore, "fingerprint", lambda self: scans.append(1) or fingerprint(self))
    stamp = store.generation.stamp()
    for _ in range(5):
        assert heads.poll() == {}
    assert scans == []
    store.set_serving("intents", new_version)
    assert store.generation.stamp() != stamp and store.generation.path == store.root.parent / ".serving-generation"
    assert heads.poll()["default"].loaded == [f"intents: primary {new_version}"]
    assert len(scans) == 1 and heads.get("default", "intents").primary.version == new_version
    assert heads.poll() == {}


def test_a_change_made_around_the_registry_is_found_by_the_periodic_rescan(store, clinc_subset, tmp_path):
    new = _second_version(store, clinc_subset, tmp_path)
    old = store.serving_version("intents")
    heads = TenantHeads(store.root.parent, rescan_interval_s=3600)
    heads.refresh()
    pointer = store.root / "intents" / "serving.json"
    pointer.write_text(pointer.read_text().replace(old, new))  # by hand, as a file-by-file sync does
    assert heads.poll() == {} and heads.get("default", "intents").primary.version == old
    heads._next_rescan = 0.0  # the rescan is due
    assert heads.poll()["default"].loaded == [f"intents: primary {new}"]


def _polled_on_a_clock(store, monkeypatch):
    """A TenantHeads loaded at t = 1000 s of a clock that only its polls move (rescans every 30 s
    while the store settles, for 120 s, then every 300 s), and `polls_until(end)`: poll once a
    second until `end`, returning the seconds since 1000 at which a poll scanned the store."""
    clock = [1000.0]
    monkeypatch.setattr(tenant_heads, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    scans: list[float] = []
    fingerprint = ModelStore.fingerprint
    monkeypatch.setattr(ModelStore, "fingerprint", lambda self: scans.append(clock[0]) or fingerprint(self))
    heads = TenantHeads(store.root.parent, rescan_interval_s=30, settled_rescan_interval_s=300, settle_s=120)
    heads.refresh()

    def polls_until(end: float) -> list[float]:
        scans.clear()
        while clock[0] < end:
            clock[0] += 1.0
            heads.poll()
        return [t - 1000.0 for t in scans]

    return heads, polls_until


def test_rescans_come_often_while_the_store_settles_and_rarely_once_it_has(store, clinc_subset, tmp_path, monkeypatch):
    """The periodic scan of a 10,000-model store costs 0.1-0.3 s: every 30 s for 2 minutes after a
    change was found (start included: the rest of a sync, a pointer delivered after the generation)
    and while a model fails to load; every 5 minutes once the store has settled."""
    new = _second_version(store, clinc_subset, tmp_path)
    old = store.serving_version("intents")
    heads, polls_until = _polled_on_a_clock(store, monkeypatch)
    assert polls_until(1600.0) == [30, 60, 90, 120, 420]  # settled from 120 s after the start
    store.generation.bump()  # a sync delivered the generation; the pointer comes with the next one
    assert polls_until(1700.0) == [601, 631, 661, 691]  # the store settles again
    pointer = store.root / "intents" / "serving.json"
    pointer.write_text(pointer.read_text().replace(old, new))  # by hand, as a file-by-file sync does
    assert polls_until(2200.0) == [721, 751, 781, 811, 841, 1141]  # found at 721, settled at 841
    assert heads.get("default", "intents").primary.version == new

    weights = store.version_dir("intents", old) / "head.npz"  # a model that fails to load ...
    weights.chmod(0o644)
    weights.write_bytes(b"not a numpy file")
    pointer.write_text(pointer.read_text().replace(new, old))
    assert polls_until(2600.0) == [1441, 1471, 1501, 1531, 1561, 1591]  # ... is retried every 30 s
    assert "intents" in heads.tenant("default").errors


def test_a_generation_file_that_cannot_be_read_makes_every_poll_scan(store):
    store.generation.path.unlink(missing_ok=True)
    store.generation.path.mkdir()  # exists, but reading it fails
    heads = TenantHeads(store.root.parent, rescan_interval_s=3600)
    heads.refresh()
    assert set(heads.poll()) == {"default"} and set(heads.poll()) == {"default"}


def test_without_a_store_generation_every_poll_scans(store):
    """A store that no registry of this version changed yet has no generation file."""
    store.generation.path.unlink(missing_ok=True)
    heads = TenantHeads(store.root.parent, rescan_interval_s=3600)
    heads.refresh()
    assert set(heads.poll()) == {"default"}


def test_polling_thread_swaps_heads(store, clinc_subset, tmp_path):
    heads = TenantHeads(store.root.parent)  # what a router worker polls: every tenant's LiveHeads
    heads.refresh()
    ticks = []
    heads.start_polling(0.05, on_tick=lambda: ticks.append(1))
    try:
        new_version = _second_version(store, clinc_subset, tmp_path)
        store.set_serving("intents", new_version)
        deadline = time.monotonic() + 10
        while heads.get("default", "intents").primary.version != new_version and time.monotonic() < deadline:
            time.sleep(0.02)
        assert heads.get("default", "intents").primary.version == new_version and ticks
    finally:
        heads.stop()


def test_a_new_state_checks_the_versions_it_keeps_before_it_serves(store, clinc_subset, tmp_path, monkeypatch):
    hashed = _counting_hashes(monkeypatch)
    heads = LiveHeads(store)
    heads.refresh()
    primary = heads.get("intents").primary
    assert primary.weights_check.pending
    fallback = _second_version(store, clinc_subset, tmp_path)
    store.change_serving("intents", lambda s: serving_state.set_fallback(s, fallback), reason="test")
    hashed.clear()  # the registry verified the state's versions as it wrote it
    assert heads.refresh().loaded == [f"intents: primary {primary.version}, fallback {fallback}"]
    serving = heads.get("intents")
    assert serving.primary is primary and primary.weights_check.verified  # kept, checked first
    assert serving.fallback.weights_check is None  # loaded for a serving model: checked at load
    assert hashed == ["head.npz", "head.npz"]
    assert heads.unchecked == 1  # plain's only


def test_weights_replaced_after_their_load_fail_the_check_and_load_again(store, tmp_path):
    """The check vouches for the file the head was built from: a file replaced since (a sync, a
    repair), even by identical bytes, is not hashed in its place; the model loads again."""
    heads = LiveHeads(store)
    heads.refresh()
    primary = heads.get("intents").primary
    weights = primary.path / "head.npz"
    copy = tmp_path / "head.npz"
    shutil.copyfile(weights, copy)
    os.replace(copy, weights)  # same bytes, another file
    vector = np.zeros((1, primary.head.input_dim), np.float32)
    with pytest.raises(ArtifactError, match="head.npz changed since it was loaded"):
        primary.predict_proba(vector)
    heads.check_weights()
    assert "changed since it was loaded" in heads.errors["intents"] and "intents" not in heads.snapshot()
    assert heads.refresh().failed == {} and heads.errors == {}  # loaded again, checked at once: it matches
    assert heads.get("intents").primary.predict_proba(vector).shape == (1, len(primary.labels))


def test_a_model_withdrawn_by_its_weights_check_is_rescanned_soon(store, monkeypatch):
    """As a model that fails to load: every rescan_interval_s, though the store had settled."""
    heads, polls_until = _polled_on_a_clock(store, monkeypatch)
    assert polls_until(1200.0) == [30, 60, 90, 120]  # settled: the next scan at 420
    _damage(store.version_dir("intents", store.serving_version("intents")) / "head.npz")
    heads.check_weights()
    assert "intents" in heads.tenant("default").errors and "intents" not in heads.snapshot("default")
    assert polls_until(1300.0) == [230, 260, 290]  # retried every 30 s, refused at once each time


def test_the_poller_checks_the_weights_a_first_load_left_for_later(store, monkeypatch):
    hashed = _counting_hashes(monkeypatch)
    heads = TenantHeads(store.root.parent)
    heads.refresh()
    assert heads.unchecked == 2 and heads.check_weights(budget_s=0.0) == 2 and hashed == []  # no time: none
    heads.start_polling(0.05)
    try:
        deadline = time.monotonic() + 10
        while heads.unchecked and time.monotonic() < deadline:
            time.sleep(0.02)
        assert heads.unchecked == 0 and sorted(hashed) == ["head.npz", "head.npz"]
    finally:
        heads.stop()
    assert heads.check_weights() == 0 and len(hashed) == 2  # nothing left: nothing hashed again


# --- one bad model never takes the others down ------------------------------------------------------


@pytest.fixture
def tenants(store):
    """MODEL_STORE with two tenants that both serve `intents` and `plain`: "acme" (listed first,
    so a failure there that aborted the refresh would leave "default" unloaded) and "default"."""
    shutil.copytree(store.root, store.root.parent / "acme", symlinks=True)
    return TenantHeads(store.root.parent), ModelStore.for_tenant(store.root.parent, "acme")


def rewrite_manifest(store: ModelStore, model: str, change) -> str:
    """Replace the serving primary's manifest by change(manifest); returns the original text."""
    path = store.version_dir(model, store.serving_version(model)) / "manifest.json"
    path.chmod(0o644)
    original = path.read_text()
    path.write_text(json.dumps(change(json.loads(original))))
    return original


MALFORMED_MANIFESTS = {
    "a missing key": (lambda m: {k: v for k, v in m.items() if k != "labels"}, "has no 'labels'"),
    "a list, not an object": (lambda m: [m], "not a JSON object"),
    "files as a list": (lambda m: {**m, "files": list(m["files"])}, "'files' is a list"),
    "architecture as a string": (lambda m: {**m, "architecture": "mlp"}, "'architecture' is a str"),
    "an embedder without its id": (lambda m: {**m, "embedder": {"dim": 32}}, "string model_id"),
    "a threshold that is no number": (lambda m: {**m, "decision": {"threshold": "high"}}, "cannot build the head"),
    "not JSON": (None, "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_MANIFESTS))
def test_a_malformed_manifest_is_contained_to_its_model(tenants, case, caplog):
    caplog.set_level(logging.INFO, logger="api.core.live_heads")
    heads, acme = tenants
    change, message = MALFORMED_MANIFESTS[case]
    if change is None:
        path = acme.version_dir("intents", acme.serving_version("intents")) / "manifest.json"
        path.chmod(0o644)
        original = path.read_text()
        path.write_text(original[:-20])
    else:
        original = rewrite_manifest(acme, "intents", change)
    for _ in range(3):  # a router's first load, then polls that retry it
        reports = heads.refresh()
    assert sorted(heads.snapshot("default")) == ["intents", "plain"]  # the tenant after it loaded
    assert sorted(heads.snapshot("acme")) == ["plain"]  # and so did the other model of its tenant
    assert list(heads.errors) == ["acme/intents"] and list(reports["acme"].failed) == ["intents"]
    reason = heads.errors["acme/intents"]
    assert message in reason and reason.startswith("acme/intents/")  # short: paths relative to MODEL_STORE
    assert [(f.tenant, f.model, f.serving) for f in heads.failures()] == [("acme", "intents", None)]
    with pytest.raises(NotFound, match="'intents' failed to load: .*" + re.escape(message)):
        heads.get("acme", "intents")
    logged = [r for r in caplog.records if "acme/intents does not load" in r.getMessage()]
    assert len(logged) == 1  # once, not at every poll

    manifest = acme.version_dir("intents", acme.serving_version("intents")) / "manifest.json"
    manifest.write_text(original)  # repaired in place: no serving pointer changes
    heads.refresh()
    assert heads.get("acme", "intents").primary.version == acme.serving_version("intents")
    assert heads.errors == {} and "acme/intents loads again" in caplog.text


def test_a_malformed_serving_state_keeps_the_last_good_one(tenants):
    heads, acme = tenants
    heads.refresh()
    serving = acme.serving_version("intents")
    pointer = acme.root / "intents" / "serving.json"
    original = pointer.read_text()
    for broken in ("[]", '{"primary": 7}', '{"primary": "v", "shadows": [1]}', "{"):
        pointer.write_text(broken)
        heads.refresh()
        assert heads.get("acme", "intents").primary.version == serving, broken
        assert [(f.tenant, f.model, f.serving) for f in heads.failures()] == [("acme", "intents", serving)], broken
        assert sorted(heads.snapshot("default")) == ["intents", "plain"]
    pointer.write_text(original)
    heads.refresh()
    assert heads.errors == {}


def test_unreadable_folders_are_contained_and_served_once_readable(tenants):
    """What a router user meets in a store it may not read everywhere: a version folder, a model
    folder, a tenant folder and MODEL_STORE itself. The refresh runs with root's permission
    override dropped, so the kernel refuses it like any other user (tests/file_access.py)."""
    heads, acme = tenants
    version = acme.version_dir("intents", acme.serving_version("intents"))
    model = acme.root / "plain"
    with obeying_permissions():
        for folder in (version, model):
            folder.chmod(0)
        try:
            with pytest.raises(PermissionError):
                (version / "manifest.json").read_bytes()  # the premise: this thread cannot read it
            heads.refresh()  # the router's first load: it used to raise and stop the worker's boot
            assert sorted(heads.snapshot("default")) == ["intents", "plain"] and heads.snapshot("acme") == {}
            assert sorted(heads.errors) == ["acme/intents", "acme/plain"]
            assert all("Permission denied" in why for why in heads.errors.values()), heads.errors
        finally:
            for folder in (version, model):
                folder.chmod(0o755)
        heads.refresh()
        assert sorted(heads.snapshot("acme")) == ["intents", "plain"] and heads.errors == {}

        # A tenant folder ("*": its models cannot be listed), then MODEL_STORE (which hides every tenant).
        for folder, keys in ((acme.root, ["acme/*"]), (acme.root.parent, ["*/*", "acme/*", "default/*"])):
            folder.chmod(0)
            try:
                heads.refresh()  # the tenants and models loaded before keep serving
                assert sorted(heads.snapshot("acme")) == sorted(heads.snapshot("default")) == ["intents", "plain"]
                assert sorted(heads.errors) == keys and all("Permission denied" in e for e in heads.errors.values())
            finally:
                folder.chmod(0o755)
            heads.refresh()
            assert heads.errors == {}
