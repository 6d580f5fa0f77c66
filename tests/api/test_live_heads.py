import time

import pytest

from api.errors import NotFound
from api.live_heads import LiveHeads
from api.tenant_heads import TenantHeads
from heads.config import parse_config
from heads.pipeline import train_head
from tests.api.conftest import FAST
from tests.fakes import HashTextEmbedder


def test_loads_every_serving_model(store):
    heads = LiveHeads(store)
    report = heads.refresh()
    assert sorted(heads.snapshot()) == ["intents", "plain"] and len(report.loaded) == 2
    assert heads.refresh().loaded == []  # nothing changed: nothing reloaded
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        heads.get("nope")


def _second_version(store, clinc_subset, tmp_path):
    data = {k: str(v) for k, v in clinc_subset.items()}
    config = parse_config({"name": "intents", "data": data, "model": {"hidden_layers": [8]}, "training": FAST})
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
