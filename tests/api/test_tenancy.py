"""Tenancy and access control on the real stack: two tenants, an operator, every endpoint.

acme and globex both have a model called "intents" (a name is unique within a tenant only);
acme also has "billing", globex "support". The router runs under gunicorn with authentication
on, its keys in PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from api.web.validation import REQUEST_ID
from inferencedb.keys import create_key, split_key
from inferencedb.migrations import apply_migrations
from tests.api.servers import RouterProcess
from tests.api.test_e2e import call
from tests.conftest import ROOT
from tests.db.helpers import query, wait_until

TENANT_MODELS = {"acme": ("intents", "billing"), "globex": ("intents", "support")}


@pytest.fixture(scope="module")
def stack(real_store, embedder_process, postgres, tmp_path_factory):
    """A running router over two tenants, and their keys."""
    tmp = tmp_path_factory.mktemp("tenancy")
    root = tmp / "models"
    source = real_store.root / "intents"
    for tenant, models in TENANT_MODELS.items():
        for model in models:
            shutil.copytree(source, root / tenant / model)
    postgres.start()
    dsn = postgres.create_database("tenancy")
    apply_migrations(dsn)
    keys = {
        "acme": create_key(dsn, tenant="acme"),
        "globex": create_key(dsn, tenant="globex"),
        "operator": create_key(dsn, tenant=None),
    }
    env = {
        "DATABASE_URL": dsn,
        "EMBEDDER_ADDRESS": embedder_process.address,
        "MODEL_STORE": str(root),
        "API_SPOOL_DIR": str(tmp / "spool"),
    }
    with RouterProcess(env, tmp / "router.log") as router:
        yield router, keys, dsn, root


def get(router, path, key=None, headers=None):
    return call(f"{router.url}{path}", None, headers, key=key)


def post(router, path, body, key=None, headers=None):
    return call(f"{router.url}{path}", body, headers, key=key)


def predict(router, model, key, text="what is my account balance", headers=None):
    return post(router, f"/v1/models/{model}/predict", {"text": text}, key, headers)


OP_ACME = {"X-Tenant": "acme"}


def test_access_matrix(stack):
    router, keys, dsn, root = stack
    acme, globex = keys["acme"], keys["globex"]
    acme_answer = predict(router, "billing", acme, headers={"X-Request-ID": "acme-req-1"})
    globex_answer = predict(router, "support", globex, headers={"X-Request-ID": "globex-req-1"})
    assert acme_answer[0] == 200 and globex_answer[0] == 200
    version = acme_answer[1]["version"]

    cells = [
        # (principal, method, path, body, headers, expected status)
        ("acme", "POST", "/v1/models/billing/predict", {"text": "pay my bill"}, None, 200),
        ("globex", "POST", "/v1/models/billing/predict", {"text": "pay my bill"}, None, 404),
        ("operator", "POST", "/v1/models/billing/predict", {"text": "pay my bill"}, OP_ACME, 200),
        ("operator", "POST", "/v1/models/billing/predict", {"text": "pay my bill"}, None, 422),
        ("acme", "GET", "/v1/models", None, None, 200),
        ("globex", "GET", "/v1/models", None, None, 200),
        ("operator", "GET", "/v1/models", None, OP_ACME, 200),
        ("acme", "GET", "/v1/models/billing", None, None, 200),
        ("globex", "GET", "/v1/models/billing", None, None, 404),
        ("operator", "GET", "/v1/models/billing", None, OP_ACME, 200),
        ("acme", "GET", "/v1/models/billing/report", None, None, 200),
        ("globex", "GET", "/v1/models/billing/report", None, None, 404),
        ("operator", "GET", "/v1/models/billing/report", None, OP_ACME, 200),
        ("acme", "GET", "/v1/models/billing/serving", None, None, 200),
        ("globex", "GET", "/v1/models/billing/serving", None, None, 404),
        ("acme", "POST", "/v1/predictions/acme-req-1/feedback", {"label": "oos"}, None, 201),
        ("globex", "POST", "/v1/predictions/acme-req-1/feedback", {"label": "oos"}, None, 404),
        ("operator", "POST", "/v1/predictions/acme-req-1/feedback", {"label": "oos"}, OP_ACME, 201),
        ("acme", "POST", "/v1/models/billing/serving", {"action": "promote", "version": version}, None, 403),
        ("globex", "POST", "/v1/models/billing/serving", {"action": "promote", "version": version}, None, 403),
        ("operator", "POST", "/v1/models/billing/serving", {"action": "promote", "version": version}, OP_ACME, 200),
        ("acme", "POST", "/v1/admin/reload", {}, None, 403),
        ("operator", "POST", "/v1/admin/reload", {}, None, 200),
        ("acme", "GET", "/metrics", None, None, 403),
        ("operator", "GET", "/metrics", None, None, 200),
        ("acme", "GET", "/v1/models", None, {"X-Tenant": "globex"}, 403),
    ]
    for who, method, path, body, headers, expected in cells:
        key = keys[who]
        if path == "/metrics":
            status = _raw_status(router, path, key)
            text = ""
        else:
            status, payload, _ = (
                post(router, path, body, key, headers) if method == "POST" else get(router, path, key, headers)
            )
            text = str(payload)
        assert status == expected, (who, method, path, status, text[:300])
        if status == 404:
            continue  # echoes only what the caller asked for (checked below: same as for nothing)
        if who == "acme" or (who == "operator" and headers == OP_ACME):
            assert "support" not in text and "globex-req-1" not in text, (who, path)
        if who == "globex":
            assert "billing" not in text and "acme-req-1" not in text, (who, path)

    state = get(router, "/v1/models/billing/serving", keys["operator"], OP_ACME)[1]
    assert f"operator key {split_key(keys['operator'])[0]}" in state["reason"]  # who changed it is recorded

    # Another tenant's model or prediction is indistinguishable from one that does not exist.
    def error_of(status_payload):
        status, payload, _ = status_payload
        return (
            status,
            payload["error"]["code"],
            payload["error"]["message"].replace("billing", "X").replace("nothing-here", "X"),
        )

    assert error_of(get(router, "/v1/models/billing", globex)) == error_of(
        get(router, "/v1/models/nothing-here", globex)
    )
    other = error_of(post(router, "/v1/predictions/acme-req-1/feedback", {"label": "oos"}, globex))
    missing = error_of(post(router, "/v1/predictions/no-such-req/feedback", {"label": "oos"}, globex))
    assert other[:2] == missing[:2] == (404, "not_found")

    listing = {
        t: sorted(m["name"] for m in get(router, "/v1/models", keys[t])[1]["models"]) for t in ("acme", "globex")
    }
    assert listing == {"acme": ["billing", "intents"], "globex": ["intents", "support"]}

    for path in ("/v1/models", "/v1/models/billing", "/v1/models/billing/report", "/v1/admin/reload"):
        assert get(router, path)[0] == 401  # no key
        assert get(router, path, "mh_000000000000_" + "x" * 43)[0] == 401  # a key that never existed
        assert get(router, path, "not-even-a-key")[0] == 401
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert get(router, path)[0] == 200  # public


def test_same_model_name_never_mixes_tenants(stack):
    router, keys, dsn, _ = stack
    for i in range(3):
        assert predict(router, "intents", keys["acme"], f"acme text {i}")[0] == 200
    for i in range(5):
        assert predict(router, "intents", keys["globex"], f"globex text {i}")[0] == 200
    wait_until(lambda: query(dsn, "SELECT count(*) FROM predictions WHERE model = 'intents'")[0][0] >= 8)
    rows = query(
        dsn,
        "SELECT tenant, count(*) FROM predictions WHERE model = 'intents' AND input_text LIKE '%% text %%' GROUP BY tenant",
    )
    assert dict(rows) == {"acme": 3, "globex": 5}
    reports = {t: get(router, "/v1/models/intents/report", keys[t])[1] for t in ("acme", "globex")}
    volumes = {t: sum(v["volume"] for v in r["versions"]) for t, r in reports.items()}
    assert volumes["acme"] < volumes["globex"]  # each tenant's report counts its own rows only
    assert reports["acme"]["tenant"] == "acme" and reports["globex"]["tenant"] == "globex"


def _store_digest(root) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _table_counts(dsn) -> dict:
    tables = ("predictions", "feedback", "api_keys", "tenants", "schema_migrations")
    return {t: query(dsn, f"SELECT count(*) FROM {t}")[0][0] for t in tables}  # noqa: S608 - fixed names


ATTACKS = ["../globex/support", "..", "%2e%2e", "intents';DROP TABLE predictions;--", "intents\u0000", "INTENTS", "a/b"]


def test_traversal_and_injection_are_refused_and_change_nothing(stack):
    router, keys, dsn, root = stack
    acme, op = keys["acme"], keys["operator"]
    status, answer, _ = predict(router, "billing", acme)
    assert status == 200
    wait_until(
        lambda: query(dsn, "SELECT count(*) FROM predictions WHERE request_id = %s", (answer["request_id"],))[0][0] == 1
    )
    store_before, db_before = _store_digest(root), _table_counts(dsn)
    answered = 0  # predictions that were rightly served: their attack string is a valid request id

    for attack in ATTACKS:
        quoted = urllib.parse.quote(attack, safe="")
        for method, path, body in (
            ("POST", f"/v1/models/{quoted}/predict", {"text": "hello"}),
            ("GET", f"/v1/models/{quoted}", None),
            ("GET", f"/v1/models/{quoted}/report", None),
            ("GET", f"/v1/models/{quoted}/serving", None),
            ("POST", f"/v1/models/{quoted}/serving", {"action": "rollback"}),
            ("POST", f"/v1/predictions/{quoted}/feedback", {"label": "oos"}),
        ):
            for key, headers in ((acme, None), (op, OP_ACME)):
                status, _, _ = (
                    post(router, path, body, key, headers) if method == "POST" else get(router, path, key, headers)
                )
                refused = {404, 405, 422} | (
                    {403} if key == acme and path.endswith("/serving") and method == "POST" else set()
                )
                assert status in refused, (attack, method, path, status)
        if attack.isprintable():
            status, _, _ = get(router, "/v1/models", op, {"X-Tenant": attack})
            assert status == 422, attack
            assert get(router, "/v1/models", acme, {"X-Tenant": attack})[0] == 403
            safe_id = REQUEST_ID.fullmatch(attack) is not None  # ".." and "INTENTS" are harmless ids
            assert predict(router, "billing", acme, headers={"X-Request-ID": attack})[0] == (200 if safe_id else 422)
            answered += safe_id
        else:  # gunicorn refuses a control character in a header before the app sees it
            for header in ("X-Tenant", "X-Request-ID"):
                assert _raw_status(router, "/v1/models", op, {header: attack}) == 400, (header, attack)
        status, _, _ = get(router, f"/v1/models/billing/report?since={quoted}", acme)
        assert status == 422, attack
        status, _, _ = post(router, "/v1/models/billing/serving", {"action": "promote", "version": attack}, op, OP_ACME)
        assert status == (409 if attack == "INTENTS" else 422), attack  # a well-formed name, but no such version
        status, _, _ = post(router, "/v1/predictions/acme-req-1/feedback", {"label": attack}, acme)
        assert status in (404, 422), attack
        status, _, _ = post(router, "/v1/models/billing/serving", {"action": attack, "version": "x"}, op, OP_ACME)
        assert status == 422, attack

    wait_until(lambda: _table_counts(dsn)["predictions"] >= db_before["predictions"] + answered)
    time.sleep(0.5)
    after = _table_counts(dsn)
    assert _store_digest(root) == store_before
    assert {k: v for k, v in after.items() if k != "predictions"} == {
        k: v for k, v in db_before.items() if k != "predictions"
    }
    assert after["predictions"] == db_before["predictions"] + answered  # refused requests are not predictions


def _raw_status(router, path, key, headers=None):
    """Status of a GET whose error body need not be JSON (gunicorn answers some requests itself)."""
    request = urllib.request.Request(
        f"{router.url}{path}", headers={"Authorization": f"Bearer {key}", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def api_cli(dsn, *args):
    return subprocess.run(
        [sys.executable, "-m", "api", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": dsn},
    )


def test_a_revoked_key_stops_working_at_once(stack):
    router, _, dsn, _ = stack
    created = api_cli(dsn, "keys", "create", "--tenant", "acme", "--description", "to revoke")
    assert created.returncode == 0
    key = created.stdout.strip()
    wait_until(lambda: predict(router, "billing", key)[0] == 200, timeout_s=5)  # new keys arrive by NOTIFY too
    listing = api_cli(dsn, "keys", "list")
    assert split_key(key)[1] not in listing.stdout  # secrets are never listed
    key_id = split_key(key)[0]
    revoked = api_cli(dsn, "keys", "revoke", key_id)
    assert revoked.returncode == 0
    started = time.monotonic()
    wait_until(lambda: predict(router, "billing", key)[0] == 401, timeout_s=5, interval_s=0.01)
    assert time.monotonic() - started < 5.0  # far below the 30 s periodic reload: NOTIFY did it, in every worker
    assert all(predict(router, "billing", key)[0] == 401 for _ in range(10))  # every worker refuses it
    assert api_cli(dsn, "keys", "revoke", key_id).returncode == 2


def test_rate_limits_are_per_tenant(stack):
    router, keys, dsn, _ = stack
    assert api_cli(dsn, "tenants", "limit", "globex", "--rps", "2", "--burst", "2").returncode == 0
    # The new limit arrives by NOTIFY: wait until every worker refuses a burst, then let the buckets
    # refill (1 request/s and a burst of 1 per worker: a longer wait cannot give more than that).
    wait_until(lambda: _refuses_a_burst(router, keys["globex"]), timeout_s=10, interval_s=0.1)
    time.sleep(1.5)
    statuses, headers_seen = [], []
    for i in range(12):
        status, _, headers = predict(router, "support", keys["globex"], f"burst {i}")
        statuses.append(status)
        headers_seen.append(headers)
    assert 429 in statuses and 200 in statuses
    limited = headers_seen[statuses.index(429)]
    assert int(limited["Retry-After"]) >= 1
    assert all(predict(router, "billing", keys["acme"], f"acme {i}")[0] == 200 for i in range(12))  # acme unaffected
    assert api_cli(dsn, "tenants", "limit", "globex", "--rps", "1000", "--burst", "1000").returncode == 0


def _refuses_a_burst(router, key) -> bool:
    return sum(predict(router, "support", key, "probe")[0] == 429 for _ in range(8)) >= 4


def heads_report(root, *args, env):
    out = subprocess.run(
        [sys.executable, "-m", "heads", "report", "intents", "--store", str(root), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in {**os.environ, **env}.items() if v is not None},
    )
    return out


def _report_volume(out_dir) -> int:
    import json

    report = json.loads((out_dir / "report.json").read_text())
    return sum(entry["volume"] for entry in report["versions"])


def test_heads_report_reads_the_named_tenant_from_the_database_and_through_the_router(stack, tmp_path):
    """`heads report --tenant T` reports T's rows, computed from DATABASE_URL or fetched from a
    router with --url, which needs the API key (MANYHEADS_API_KEY) when authentication is on."""
    router, keys, dsn, root = stack
    ids = {"acme": [f"report-acme-{i}" for i in range(3)], "globex": [f"report-globex-{i}" for i in range(5)]}
    for tenant, request_ids in ids.items():
        for request_id in request_ids:
            assert predict(router, "intents", keys[tenant], headers={"X-Request-ID": request_id})[0] == 200
    every_id = ids["acme"] + ids["globex"]
    wait_until(
        lambda: query(dsn, "SELECT count(*) FROM predictions WHERE request_id = ANY(%s)", (every_id,))[0][0] == 8
    )
    expected = {
        tenant: query(dsn, "SELECT count(*) FROM predictions WHERE tenant = %s AND model = 'intents'", (tenant,))[0][0]
        for tenant in ids
    }
    assert expected["acme"] != expected["globex"]
    # Yesterday to tomorrow: every row of this module, even in a run that crosses midnight UTC.
    day = 86400
    since, until = (time.strftime("%Y-%m-%d", time.gmtime(time.time() + d)) for d in (-day, 2 * day))
    window = ["--since", since, "--until", until]

    for tenant in ids:  # from the database
        out = heads_report(
            root, "--tenant", tenant, *window, "--out", str(tmp_path / f"db-{tenant}"), env={"DATABASE_URL": dsn}
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert _report_volume(tmp_path / f"db-{tenant}") == expected[tenant]

    through_router = ["--url", router.url, *window]
    out = heads_report(
        root,
        "--tenant",
        "acme",
        *through_router,
        "--out",
        str(tmp_path / "url-acme"),
        env={"MANYHEADS_API_KEY": keys["acme"]},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert _report_volume(tmp_path / "url-acme") == expected["acme"]
    out = heads_report(
        root,
        "--tenant",
        "globex",
        *through_router,
        "--out",
        str(tmp_path / "url-op"),
        env={"MANYHEADS_API_KEY": keys["operator"]},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert _report_volume(tmp_path / "url-op") == expected["globex"]  # an operator key names the tenant
    refused = heads_report(root, "--tenant", "acme", *through_router, env={"MANYHEADS_API_KEY": None})
    assert refused.returncode == 2 and "(401)" in refused.stderr and "Traceback" not in refused.stderr
    other = heads_report(root, "--tenant", "globex", *through_router, env={"MANYHEADS_API_KEY": keys["acme"]})
    assert other.returncode == 2 and "(403)" in other.stderr


def test_router_log_holds_no_secret_and_no_stack_trace(stack):
    """Runs last in this module: everything above (attacks included) went through this router."""
    router, keys, _, _ = stack
    log = router.log_path.read_text(errors="replace")
    assert "Bearer" not in log
    for key in keys.values():
        assert split_key(key)[1] not in log
    assert "Traceback" not in log
