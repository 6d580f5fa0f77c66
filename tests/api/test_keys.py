"""API keys: the ring's checks, the key store against a real PostgreSQL, and its snapshot."""

from __future__ import annotations

import stat
import time

import pytest

from heads.errors import RegistryError
from inferencedb.errors import InvalidKey
from inferencedb.keys import (
    KeyRecord,
    KeyRing,
    KeyStore,
    create_key,
    hash_secret,
    list_keys,
    load_ring,
    new_key,
    revoke_key,
    set_limits,
    split_key,
)
from tests.db.helpers import query, wait_until

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"  # connection refused at once


def test_keys_are_stored_only_as_salted_hashes(db):
    key = create_key(db, tenant="acme", description="backend")
    again = create_key(db, tenant="acme")
    key_id, secret = split_key(key)
    rows = query(db, "SELECT key_id, tenant, role, salt, secret_hash, description FROM api_keys ORDER BY created_at")
    assert [(r[0], r[1], r[2]) for r in rows] == [(key_id, "acme", "tenant"), (split_key(again)[0], "acme", "tenant")]
    assert bytes(rows[0][3]) != bytes(rows[1][3])  # one salt per key
    stored = " ".join(str(bytes(v)) if isinstance(v, memoryview) else str(v) for r in rows for v in r)
    assert secret not in stored and secret.encode().hex() not in stored
    listed = list_keys(db)
    assert [k["key_id"] for k in listed] == [key_id, split_key(again)[0]]
    assert all(secret not in str(k) for k in listed)


def test_the_ring_authenticates_and_refuses(db):
    tenant_key = create_key(db, tenant="acme")
    operator_key = create_key(db, tenant=None)
    ring = load_ring(db)
    principal = ring.authenticate(f"Bearer {tenant_key}")
    assert (principal.tenant, principal.is_operator) == ("acme", False)
    assert ring.authenticate(f"bearer {operator_key}").is_operator  # the scheme is case-insensitive
    key_id, secret = split_key(tenant_key)
    wrong_secret = f"mh_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    for header, message in (
        (None, "missing"),
        ("", "missing"),
        (tenant_key, "malformed"),  # no scheme
        (f"Basic {tenant_key}", "malformed"),
        ("Bearer mh_short_x", "malformed"),
        (f"Bearer {wrong_secret}", "invalid or revoked"),
        (f"Bearer mh_000000000000_{secret}", "invalid or revoked"),  # unknown id, hashed all the same
    ):
        with pytest.raises(InvalidKey, match=message):
            ring.authenticate(header)
    assert revoke_key(db, key_id) and not revoke_key(db, key_id)
    with pytest.raises(InvalidKey, match="invalid or revoked"):
        load_ring(db).authenticate(f"Bearer {tenant_key}")


def test_tenant_names_are_checked(db):
    for bad in ("../other", "a/b", "", "x" * 200, "Acme"):
        with pytest.raises(RegistryError):
            create_key(db, tenant=bad)
    assert query(db, "SELECT count(*) FROM api_keys")[0][0] == 0


def test_the_store_follows_changes_and_snapshots_them(db, tmp_path):
    snapshot = tmp_path / "spool" / "api-keys.json"
    store = KeyStore(db, snapshot=snapshot).start()
    try:
        key = create_key(db, tenant="acme")
        wait_until(lambda: split_key(key)[0] in store.ring.records, timeout_s=5)
        set_limits(db, "acme", rate_rps=7, burst=9)
        wait_until(lambda: store.limits("acme") is not None and store.limits("acme").rate_rps == 7, timeout_s=5)
        wait_until(lambda: snapshot.is_file() and split_key(key)[0] in snapshot.read_text(), timeout_s=5)
        assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600
        assert split_key(key)[1] not in snapshot.read_text()
        revoke_key(db, split_key(key)[0])
        started = time.monotonic()
        wait_until(lambda: split_key(key)[0] not in store.ring.records, timeout_s=5, interval_s=0.01)
        # Far below the 30 s periodic reload, so NOTIFY did it (milliseconds when the machine is idle).
        assert time.monotonic() - started < 5.0
    finally:
        store.close()


def test_a_router_started_while_the_database_is_down_uses_the_snapshot(db, tmp_path):
    snapshot = tmp_path / "api-keys.json"
    key = create_key(db, tenant="acme")
    snapshot.write_text(load_ring(db).to_json())
    started = time.monotonic()
    store = KeyStore(UNREACHABLE, snapshot=snapshot, retry_s=60).start()
    try:
        assert time.monotonic() - started < 5  # no long wait when the database refuses at once
        assert store.authenticate(f"Bearer {key}").tenant == "acme"
    finally:
        store.close()
    without = KeyStore(UNREACHABLE, snapshot=tmp_path / "none.json", retry_s=60).start()
    try:
        with pytest.raises(InvalidKey):
            without.authenticate(f"Bearer {key}")
    finally:
        without.close()
    snapshot.write_text("{not json")
    broken = KeyStore(UNREACHABLE, snapshot=snapshot, retry_s=60).start()
    try:
        with pytest.raises(InvalidKey):
            broken.authenticate(f"Bearer {key}")
    finally:
        broken.close()


def test_the_ring_survives_a_json_round_trip(db):
    create_key(db, tenant="acme")
    create_key(db, tenant=None)
    set_limits(db, "globex", rate_rps=3, burst=None)
    ring = load_ring(db)
    again = KeyRing.from_json(ring.to_json())
    assert again.records == ring.records and again.limits == ring.limits


def test_keys_split_into_id_and_secret_whatever_the_secret_holds():
    """New secrets hold no "_", so a key splits on "_" into exactly three parts; a key issued
    earlier, whose secret may hold "_" and "-", still parses and authenticates."""
    for key, key_id, secret in (new_key() for _ in range(500)):
        assert key.split("_") == ["mh", key_id, secret] and split_key(key) == (key_id, secret)
    legacy_secret = "a_b-c" + "x" * 38
    legacy = f"mh_0123456789ab_{legacy_secret}"
    assert split_key(legacy) == ("0123456789ab", legacy_secret)
    record = KeyRecord("0123456789ab", "acme", "tenant", b"s" * 16, hash_secret(b"s" * 16, legacy_secret))
    assert KeyRing({record.key_id: record}).authenticate(f"Bearer {legacy}").tenant == "acme"
    for malformed in ("", "mh_0123456789ab", f"{legacy}x", legacy.replace("ab_", "AB_"), f" {legacy}"):
        assert split_key(malformed) is None
