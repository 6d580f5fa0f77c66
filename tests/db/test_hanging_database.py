"""A PostgreSQL that accepts connections but never answers, made with a TCP proxy the test
controls (forward, then blackhole): the inference log, the request-path queries and the key
store each give up within their bound, lose nothing, and recover when the database answers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from inferencedb.database import Database, DatabaseUnavailable
from inferencedb.inference_log import InferenceLog
from inferencedb.keys import KeyStore, create_key
from tests.db.helpers import wait_until
from tests.db.records import make_record
from tests.db.test_inference_log import FAST, counts, drained
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def proxied(db):
    """(proxy, DSN through it) in front of this test's database."""
    proxy, dsn = TcpProxy.for_dsn(db)
    with proxy:
        yield proxy, dsn


def test_the_inference_log_never_waits_for_a_hanging_database(db: str, proxied, tmp_path: Path):
    proxy, through = proxied
    inference_log = InferenceLog(through, spool_dir=tmp_path, statement_timeout_s=1.0, **FAST).start()
    inference_log.log_many(make_record(i, request_id=f"before-{i}") for i in range(200))
    wait_until(lambda: counts(db) == (200, 200))

    proxy.blackhole()
    slowest = 0.0
    for i in range(300):
        started = time.monotonic()
        inference_log.log(make_record(i, request_id=f"during-{i}"))
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.005)  # about 2 s of traffic: batches are sent, and hang
    wait_until(lambda: inference_log.stats().failed_batches > 0, timeout_s=10)  # a hung batch was cut
    started = time.monotonic()
    inference_log.close(timeout_s=3.0)
    closing_s = time.monotonic() - started
    # Logging never touches the database; a stall would last the 1 s deadline at least.
    assert slowest < 0.5, slowest
    assert closing_s < 6.0, closing_s  # close's own bound, plus one cut deadline at most
    assert counts(db)[0] < 500  # the database did hang: rows are waiting in the journal

    proxy.forward()
    successor = InferenceLog(through, spool_dir=tmp_path, **FAST).start()
    wait_until(lambda: drained(successor), timeout_s=60)
    successor.close()
    assert counts(db) == (500, 500)


def test_request_queries_answer_unavailable_within_their_timeout(proxied):
    proxy, through = proxied
    database = Database(through, max_connections=2, timeout_s=1.0)
    try:
        assert database.run("SELECT 1", fetch="one") == (1,)  # a pooled connection, then the hang
        proxy.blackhole()
        for _ in range(2):  # the pooled connection (cut by the deadline), then a new one (connect timeout)
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable):
                database.run("SELECT 1", fetch="one")
            assert time.monotonic() - started < 4.0  # 1 s deadline, or libpq's 2 s minimum connect timeout
        proxy.forward()
        assert database.run("SELECT 2", fetch="one") == (2,)
    finally:
        database.close()


def test_the_key_store_keeps_its_keys_and_recovers(db: str, proxied):
    proxy, through = proxied
    key = create_key(db, tenant="acme")
    store = KeyStore(through, reload_interval_s=0.5, retry_s=0.2).start()
    try:
        assert store.authenticate(f"Bearer {key}").tenant == "acme"
        proxy.blackhole()
        time.sleep(3.0)  # periodic reloads hang, and are cut
        assert store.authenticate(f"Bearer {key}").tenant == "acme"  # the last known keys still work
        proxy.forward()
        later = create_key(db, tenant="globex")
        wait_until(lambda: _authenticates(store, later), timeout_s=15)  # the thread was not stuck
    finally:
        started = time.monotonic()
        store.close()
        assert time.monotonic() - started < 6.0


def _authenticates(store: KeyStore, key: str) -> bool:
    try:
        store.authenticate(f"Bearer {key}")
    except Exception:  # noqa: BLE001 - Unauthorized until the reload
        return False
    return True
