"""One bad model never takes the router down.

A model whose serving version cannot be loaded (a malformed manifest; a version folder the router
user cannot read) is skipped: the router starts, every other model answers, /readyz stays ready
and reports it (which model and why to an operator key, a count to anyone), the metrics count it,
and it serves as soon as it is repaired, without a restart or a new serving pointer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from api.web.app import create_app
from heads.known_checksums import FILE_NAME as KNOWN_CHECKSUMS_FILE
from heads.known_checksums import KnownChecksums
from heads.registry import ModelStore
from inferencedb.database import Database
from inferencedb.keys import create_key
from tests.api.conftest import ListSink, make_runtime
from tests.api.servers import RouterProcess, free_port
from tests.api.test_e2e import call
from tests.db.helpers import wait_until
from tests.file_access import without_file_override

TENANT_MODELS = {"acme": ("billing", "intents"), "globex": ("intents", "support")}


def primary_dir(root: Path, tenant: str, model: str) -> Path:
    store = ModelStore.for_tenant(root, tenant)
    return store.version_dir(model, store.serving_version(model))


def rewrite(manifest: Path, change) -> str:
    """Replace `manifest` by change(manifest); returns the original text."""
    manifest.chmod(0o644)
    original = manifest.read_text()
    manifest.write_text(json.dumps(change(json.loads(original))))
    return original


# --- in process: what /readyz, the listing and a prediction say ------------------------------------


def test_readiness_reports_a_bad_model_to_operators_only(store):
    manifest = primary_dir(store.root.parent, "default", "plain") / "manifest.json"
    rewrite(manifest, lambda m: {k: v for k, v in m.items() if k != "labels"})  # was a KeyError
    runtime, keys = make_runtime(store, ListSink(), Database(f"postgresql://127.0.0.1:{free_port()}/none"))
    client = create_app(runtime=runtime).test_client()

    def readyz(key=None):
        response = client.get("/readyz", headers={"Authorization": f"Bearer {key}"} if key else {})
        return response.status_code, response.get_json()

    for key in (None, keys["tenant"], "mh_000000000000_" + "x" * 43, "garbage"):
        status, body = readyz(key)
        assert status == 200 and body["status"] == "ready", key  # the healthy model keeps it ready
        assert body["models"] == 1 and body["load_errors"] == 1 and "failed_models" not in body, key
    status, body = readyz(keys["operator"])
    assert status == 200 and len(body["failed_models"]) == 1
    failure = body["failed_models"][0]
    assert failure["tenant"] == "default" and failure["model"] == "plain" and failure["serving"] is None
    assert failure["reason"].startswith("default/plain/") and "has no 'labels'" in failure["reason"]

    tenant = {"Authorization": f"Bearer {keys['tenant']}"}
    listing = client.get("/v1/models", headers=tenant).get_json()
    assert [m["name"] for m in listing["models"]] == ["intents"] and listing["errors"] == {"plain": failure["reason"]}
    response = client.post("/v1/models/plain/predict", json={"text": "hello"}, headers=tenant)
    assert response.status_code == 404 and "'plain' failed to load" in response.get_json()["error"]["message"]
    other = {"Authorization": f"Bearer {keys['other']}"}  # another tenant learns nothing of it
    response = client.post("/v1/models/plain/predict", json={"text": "hello"}, headers=other)
    assert response.status_code == 404 and response.get_json()["error"]["message"] == "unknown model 'plain'"
    assert client.post("/v1/models/intents/predict", json={"text": "hello"}, headers=tenant).status_code == 200


def test_weights_found_corrupt_at_their_first_answer_are_a_404_with_the_reason(store):
    """A first load leaves the weights' checksum for their first need (heads/weights_check.py): a
    corrupt file is then found by a request, which is answered as a model that did not load, and
    the model leaves serving at the poller's next check; the other models answer throughout."""
    weights = primary_dir(store.root.parent, "default", "plain") / "head.npz"
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = bytes(64)  # in the arrays: the zip still reads
    weights.chmod(0o644)
    weights.write_bytes(bytes(damaged))
    runtime, keys = make_runtime(store, ListSink(), Database(f"postgresql://127.0.0.1:{free_port()}/none"))
    client = create_app(runtime=runtime).test_client()
    tenant = {"Authorization": f"Bearer {keys['tenant']}"}
    assert client.get("/readyz").get_json()["load_errors"] == 0  # loaded: not checked yet
    for _ in range(2):
        response = client.post("/v1/models/plain/predict", json={"text": "hello"}, headers=tenant)
        message = response.get_json()["error"]["message"]
        assert response.status_code == 404 and message.startswith("model 'plain' failed to load: version ")
        assert message.endswith("head.npz does not match its checksum (corrupt version)") and "/" not in message
    assert client.post("/v1/models/intents/predict", json={"text": "hello"}, headers=tenant).status_code == 200
    runtime.heads.check_weights(budget_s=0.0)  # what the requests found is withdrawn, with no time to hash
    body = client.get("/readyz", headers={"Authorization": f"Bearer {keys['operator']}"}).get_json()
    assert body["load_errors"] == 1 and body["unchecked_weights"] == 0 and body["models"] == 1
    assert body["failed_models"][0]["reason"].startswith("default/plain/")
    response = client.post("/v1/models/plain/predict", json={"text": "hello"}, headers=tenant)
    assert response.status_code == 404 and "does not match its checksum" in response.get_json()["error"]["message"]


# --- end to end: a real gunicorn router ---------------------------------------------------------------


@pytest.fixture
def stack(real_store, embedder_process, db, tmp_path):
    """MODEL_STORE with two tenants of two models each (the real encoder's `intents` head), the
    router's environment, and keys."""
    root = tmp_path / "models"
    for tenant, models in TENANT_MODELS.items():
        for model in models:
            shutil.copytree(real_store.root / "intents", root / tenant / model)
    keys = {t: create_key(db, tenant=t) for t in TENANT_MODELS} | {"operator": create_key(db, tenant=None)}
    env = {
        "DATABASE_URL": db,
        "EMBEDDER_ADDRESS": embedder_process.address,
        "MODEL_STORE": str(root),
        "API_SPOOL_DIR": str(tmp_path / "spool"),
        # A repair in place moves no serving pointer and no store generation: the periodic scan
        # finds it (30 s by default).
        "API_RESCAN_INTERVAL_S": "1",
    }
    return root, env, keys


def metric(router: RouterProcess, operator: str, sample: str) -> float | None:
    request = urllib.request.Request(f"{router.url}/metrics", headers={"Authorization": f"Bearer {operator}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        lines = response.read().decode().splitlines()
    return next((float(line.split()[-1]) for line in lines if line.startswith(sample + " ")), None)


def predict(router: RouterProcess, key: str, model: str) -> tuple[int, dict]:
    status, body, _ = call(f"{router.url}/v1/models/{model}/predict", {"text": "what is my balance"}, key=key)
    return status, body


def break_manifest(root: Path, tenant: str, model: str):
    manifest = primary_dir(root, tenant, model) / "manifest.json"
    original = rewrite(manifest, lambda m: {**m, "architecture": "mlp"})  # was an AttributeError
    return "'architecture' is a str", lambda: manifest.write_text(original)


def lock_version_folder(root: Path, tenant: str, model: str):
    folder = primary_dir(root, tenant, model)
    folder.chmod(0)
    # The premise: a process started like the router cannot read it, though the suite runs as root.
    denied = subprocess.run(
        ["cat", str(folder / "manifest.json")], preexec_fn=without_file_override, capture_output=True, text=True
    )
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied
    return "Permission denied", lambda: folder.chmod(0o755)


def corrupt_verified_weights(root: Path, tenant: str, model: str):
    """Weights an earlier run of this router verified (recorded in its spool, beside the store in
    `stack`), then changed in place: the record must not let them through."""
    weights = primary_dir(root, tenant, model) / "head.npz"
    manifest = json.loads((weights.parent / "manifest.json").read_text())
    assert KnownChecksums(root.parent / "spool" / KNOWN_CHECKSUMS_FILE).matches(weights, manifest["files"]["head.npz"])
    original = weights.read_bytes()
    damaged = bytearray(original)
    middle = len(damaged) // 2  # in the arrays' data
    damaged[middle : middle + 64] = bytes(64)
    weights.write_bytes(bytes(damaged))
    return "does not match its checksum", lambda: weights.write_bytes(original)


@pytest.mark.parametrize(
    ("breaks", "tenant", "model"),
    [
        (break_manifest, "globex", "support"),
        (lock_version_folder, "acme", "billing"),
        (corrupt_verified_weights, "acme", "intents"),
    ],
    ids=["malformed manifest", "unreadable version folder", "weights changed after a run verified them"],
)
def test_a_bad_model_is_skipped_reported_and_served_once_repaired(stack, tmp_path, breaks, tenant, model):
    root, env, keys = stack
    why, repair = breaks(root, tenant, model)
    try:
        # The router's processes obey permission bits, as the unprivileged user of a deployment does.
        with RouterProcess(env, tmp_path / "router.log", preexec_fn=without_file_override) as router:
            bad, operator = f"{tenant}/{model}", keys["operator"]
            for _ in range(4):  # every request, whichever worker answers it
                status, public = call(f"{router.url}/readyz")[:2]
                assert status == 200 and public["load_errors"] == 1 and "failed_models" not in public
                failures = call(f"{router.url}/readyz", key=operator)[1]["failed_models"]
                assert [(f["tenant"], f["model"], f["serving"]) for f in failures] == [(tenant, model, None)]
                assert why in failures[0]["reason"] and failures[0]["reason"].startswith(f"{bad}/")
                for t, models in TENANT_MODELS.items():
                    for m in models:
                        status, body = predict(router, keys[t], m)
                        if (t, m) == (tenant, model):
                            assert status == 404 and "failed to load" in body["error"]["message"]
                        else:
                            assert status == 200, (t, m, body)
            assert metric(router, operator, "router_heads_failed") == 1.0
            assert metric(router, operator, f'router_head_load_failed{{model="{bad}"}}') == 1.0

            repair()  # in place: no serving pointer changes, nothing restarts
            wait_until(lambda: all(predict(router, keys[tenant], model)[0] == 200 for _ in range(6)), timeout_s=30)
            wait_until(lambda: all(call(f"{router.url}/readyz")[1]["load_errors"] == 0 for _ in range(6)))
            wait_until(lambda: metric(router, operator, "router_heads_failed") == 0.0)
            assert metric(router, operator, f'router_head_load_failed{{model="{bad}"}}') == 0.0
        log = (tmp_path / "router.log").read_text()
        # At most once per worker, not at every poll (a worker that booted after the repair, as
        # a slow second worker may, never saw the failure).
        assert 1 <= log.count(f"{bad} does not load") <= 2
    finally:
        repair()
