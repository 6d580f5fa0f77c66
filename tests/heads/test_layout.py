"""The store's folder layout: MODEL_STORE/<tenant>/<model>/<version>/, built in one place."""

import pytest

from heads import layout
from heads.errors import RegistryError
from heads.registry import ModelStore


@pytest.mark.parametrize("tenant", ["../x", "A", "", "a/b"])
def test_an_unsafe_tenant_is_refused(tmp_path, tenant):
    with pytest.raises(RegistryError, match="invalid tenant name"):
        layout.tenant_root(tmp_path, tenant)
    with pytest.raises(RegistryError, match="invalid tenant name"):
        ModelStore.for_tenant(tmp_path, tenant)


def test_a_tenant_store_knows_its_tenant_and_folders(tmp_path):
    store = ModelStore.for_tenant(tmp_path, "acme")
    assert store.tenant == "acme" and store.root == tmp_path / "acme" and layout.store_root(store.root) == tmp_path
    assert store.version_dir("intents", "v1") == tmp_path / "acme" / "intents" / "v1"
    assert layout.serving_path(store.model_dir("intents")) == tmp_path / "acme" / "intents" / "serving.json"
    assert ModelStore(tmp_path / "models").tenant is None  # a folder of models, no tenant's


def test_only_complete_versions_and_no_staging_folders_are_listed(tmp_path):
    store = ModelStore.for_tenant(tmp_path, "acme")
    staging = store.new_staging_dir("intents")
    assert staging.parent == store.root and staging.name.startswith(".staging-intents-")
    complete, partial = store.version_dir("intents", "v1"), store.version_dir("intents", "v2")
    complete.mkdir(parents=True)
    partial.mkdir()
    layout.manifest_path(complete).write_text("{}")
    assert layout.tenants(tmp_path) == ["acme"]
    assert layout.models(store.root) == ["intents"] and store.versions("intents") == ["v1"]
