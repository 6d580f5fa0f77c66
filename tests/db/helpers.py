"""Helpers shared by the database tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg2

# Fast and still crash-safe for a *process* crash: fsync=off only matters if the machine dies.
# synchronous_commit stays on: with it off, a SIGKILLed server loses acknowledged commits, and
# the tests that kill the server check that no acknowledged row is lost.
TEST_SERVER_SETTINGS = {"fsync": "off", "full_page_writes": "off", "max_connections": "200"}


def query(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement in its own connection and return its rows (committed)."""
    conn = psycopg2.connect(dsn, connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def wait_until(condition: Callable[[], bool], *, timeout_s: float = 30.0, interval_s: float = 0.05) -> None:
    """Poll `condition` until it is true; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


def clear_of_midnight(margin_s: float = 90.0) -> None:
    """Wait until the current UTC day has more than `margin_s` seconds left, so that rows written
    now and a one-day window computed afterwards fall on the same day."""
    left = 86400 - time.time() % 86400
    if left < margin_s:
        time.sleep(left + 1.0)
