"""API keys: creation and revocation (for the CLI), and authentication (for the router).

A key is `mh_<key_id>_<secret>`: `key_id` (12 hex characters) is public, the secret (43 random
letters and digits, 256 bits) is shown once. The secret has no `_`, so the key splits on `_` into
exactly three parts; keys issued before that (URL-safe base64 secrets, which may hold `_` and `-`)
still authenticate. Parse a key with `split_key`, never with a split of your own. PostgreSQL stores only sha256(salt || secret); keys are
high-entropy tokens, not passwords, so one salted hash is as strong as a slow one and costs
microseconds per request. Comparisons are constant-time, unknown key ids included.

Each router worker keeps the valid keys in memory (`KeyStore`): a request never waits for the
database, and authentication keeps working while PostgreSQL is down. A LISTEN on the channel
`api_keys` (a trigger notifies on every change) reloads the keys at once, so a revoked key stops
working on running routers within milliseconds; a periodic reload covers lost notifications.
Every load is also written to a snapshot file (hashes only, mode 600, beside the inference-log
spool), from which a router that starts while PostgreSQL is down authenticates until the
database is back; a key revoked during that outage works there until then.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import select
import string
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from heads.names import check_tenant_name
from inferencedb import pg
from inferencedb.errors import InvalidKey

log = logging.getLogger(__name__)

# The secret's group also admits "_" and "-": secrets issued before the alphabet lost them.
KEY = re.compile(r"^mh_([a-f0-9]{12})_([A-Za-z0-9_-]{43})$")
SECRET_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 43  # 43 characters of 62: 256 bits
CHANNEL = "api_keys"
_DUMMY_SALT = b"\0" * 16


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str | None  # None for an operator key
    role: str  # "tenant" | "operator"

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    tenant: str | None
    role: str
    salt: bytes
    secret_hash: bytes


@dataclass(frozen=True)
class TenantLimits:
    rate_rps: float | None
    burst: int | None


def split_key(key: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, or None."""
    match = KEY.fullmatch(key)
    return (match.group(1), match.group(2)) if match else None


def new_key() -> tuple[str, str, str]:
    """A fresh (key, key_id, secret)."""
    key_id = secrets.token_hex(6)
    secret = "".join(secrets.choice(SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
    return f"mh_{key_id}_{secret}", key_id, secret


def hash_secret(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


class KeyRing:
    """An immutable snapshot of the valid keys and the tenants' limits."""

    def __init__(self, records: dict[str, KeyRecord] | None = None, limits: dict[str, TenantLimits] | None = None):
        self.records = records or {}
        self.limits = limits or {}
        self._dummy_hash = hash_secret(_DUMMY_SALT, "")

    def to_json(self) -> str:
        return json.dumps(
            {
                "keys": [
                    [r.key_id, r.tenant, r.role, r.salt.hex(), r.secret_hash.hex()]
                    for r in sorted(self.records.values(), key=lambda r: r.key_id)
                ],
                "tenants": {name: [lim.rate_rps, lim.burst] for name, lim in sorted(self.limits.items())},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        data = json.loads(text)
        records = {
            k: KeyRecord(k, tenant, role, bytes.fromhex(salt), bytes.fromhex(digest))
            for k, tenant, role, salt, digest in data["keys"]
        }
        return cls(records, {name: TenantLimits(rate, burst) for name, (rate, burst) in data["tenants"].items()})

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise InvalidKey("missing API key: send Authorization: Bearer <key>")
        scheme, _, token = authorization.partition(" ")
        parts = split_key(token.strip()) if scheme.lower() == "bearer" else None
        if parts is None:
            raise InvalidKey("malformed API key: send Authorization: Bearer <key>")
        key_id, secret = parts
        record = self.records.get(key_id)
        salt, expected = (record.salt, record.secret_hash) if record else (_DUMMY_SALT, self._dummy_hash)
        valid = hmac.compare_digest(hash_secret(salt, secret), expected)  # same work for unknown ids
        if record is None or not valid:
            raise InvalidKey("invalid or revoked API key")
        return Principal(record.key_id, record.tenant, record.role)


LOAD_KEYS = "SELECT key_id, tenant, role, salt, secret_hash FROM api_keys WHERE revoked_at IS NULL"
LOAD_TENANTS = "SELECT name, rate_rps, burst FROM tenants"


def load_ring(dsn: str, *, timeout_s: float = 5.0) -> KeyRing:
    conn = pg.connect(dsn, application_name="manyheads-api-keys", statement_timeout_s=timeout_s)
    try:
        with pg.deadline(conn, timeout_s + 1.0), conn, conn.cursor() as cur:
            cur.execute(LOAD_KEYS)
            records = {r[0]: KeyRecord(r[0], r[1], r[2], bytes(r[3]), bytes(r[4])) for r in cur.fetchall()}
            cur.execute(LOAD_TENANTS)
            limits = {name: TenantLimits(rate, burst) for name, rate, burst in cur.fetchall()}
    finally:
        conn.close()
    return KeyRing(records, limits)


class KeyStore:
    """The keys of one router worker, kept current by LISTEN/NOTIFY (see the module docstring)."""

    def __init__(
        self, dsn: str, *, snapshot: Path | None = None, reload_interval_s: float = 30.0, retry_s: float = 2.0
    ):
        self._dsn = dsn
        self._snapshot = snapshot
        self._written = ""
        self._reload_interval_s = reload_interval_s
        self._retry_s = retry_s
        self._ring = KeyRing()
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._tried = threading.Event()  # the first load attempt is over, done or failed
        self._last_reload = 0.0
        self._thread: threading.Thread | None = None

    @property
    def ring(self) -> KeyRing:
        return self._ring

    def authenticate(self, authorization: str | None) -> Principal:
        return self._ring.authenticate(authorization)

    def limits(self, tenant: str) -> TenantLimits | None:
        return self._ring.limits.get(tenant)

    def start(self, wait_s: float = 10.0) -> KeyStore:
        self._thread = threading.Thread(target=self._listen, name="api-keys", daemon=True)
        self._thread.start()
        self._tried.wait(wait_s)  # usually immediate: connection refused fails at once too
        if not self._loaded.is_set():
            self._read_snapshot()
        return self

    def _reload(self) -> None:
        self._ring = load_ring(self._dsn)
        self._last_reload = time.monotonic()
        self._loaded.set()
        self._write_snapshot()

    def _read_snapshot(self) -> None:
        if self._snapshot is None or self._loaded.is_set():
            return
        try:
            ring = KeyRing.from_json(self._snapshot.read_text())
        except FileNotFoundError:
            log.warning("API keys: database unreachable and no snapshot yet; every request gets 401 until it is back")
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("API keys: unreadable snapshot %s (%s); ignored", self._snapshot, type(exc).__name__)
            return
        if not self._loaded.is_set():  # the database may have answered meanwhile: it wins
            self._ring = ring
            log.warning("API keys: database unreachable; using the snapshot of %d keys", len(ring.records))

    def _write_snapshot(self) -> None:
        if self._snapshot is None:
            return
        text = self._ring.to_json()
        if text == self._written:
            return
        try:
            self._snapshot.parent.mkdir(parents=True, exist_ok=True)
            # Unique: routers of several hosts may share the folder (EFS), where pids repeat.
            tmp = self._snapshot.with_name(f".{self._snapshot.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self._snapshot)  # atomic: workers writing at once each leave a whole file
            self._written = text
        except OSError as exc:
            log.warning("API keys: could not write the snapshot %s (%s)", self._snapshot, exc.strerror)

    def _listen(self) -> None:
        while not self._stop.is_set():
            conn = None
            try:
                conn = pg.connect(self._dsn, application_name="manyheads-api-keys-listen", statement_timeout_s=5.0)
                conn.autocommit = True
                with pg.deadline(conn, 6.0), conn.cursor() as cur:
                    cur.execute(f"LISTEN {CHANNEL}")
                self._reload()  # after LISTEN: no change can slip between the load and the subscription
                self._tried.set()
                while not self._stop.is_set():
                    ready, _, _ = select.select([conn], [], [], 1.0)
                    if ready:
                        conn.poll()
                        if conn.notifies:
                            conn.notifies.clear()
                            self._reload()
                    if time.monotonic() - self._last_reload >= self._reload_interval_s:
                        self._reload()  # in case a notification was lost
            except (psycopg2.Error, OSError) as exc:
                log.warning("API keys: database unreachable (%s); keeping the last known keys", type(exc).__name__)
                self._tried.set()
                self._stop.wait(self._retry_s)
            finally:
                if conn is not None:
                    conn.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


# --- administration (python -m api keys ...) -----------------------------------------------------


def ensure_tenant(cur, name: str, *, rate_rps: float | None = None, burst: int | None = None) -> None:
    check_tenant_name(name)
    cur.execute(
        "INSERT INTO tenants (name, rate_rps, burst) VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
        "SET rate_rps = COALESCE(EXCLUDED.rate_rps, tenants.rate_rps), burst = COALESCE(EXCLUDED.burst, tenants.burst)",
        (name, rate_rps, burst),
    )


@contextlib.contextmanager
def _admin_transaction(dsn: str) -> Iterator:
    """A cursor in one transaction on a connection of its own; driver errors become this
    package's (DatabaseUnavailable when the server cannot be reached)."""
    with pg.driver_errors_translated():
        conn = psycopg2.connect(dsn, connect_timeout=5, application_name="manyheads-admin", **pg.KEEPALIVES)
        try:
            with conn, conn.cursor() as cur:
                yield cur
        finally:
            conn.close()


def create_key(dsn: str, *, tenant: str | None, description: str = "") -> str:
    """A new key for `tenant` (None: an operator key). The secret is returned once, never stored."""
    key, key_id, secret = new_key()
    salt = secrets.token_bytes(16)
    with _admin_transaction(dsn) as cur:
        if tenant is not None:
            ensure_tenant(cur, tenant)
        cur.execute(
            "INSERT INTO api_keys (key_id, tenant, role, salt, secret_hash, description) VALUES (%s, %s, %s, %s, %s, %s)",
            (key_id, tenant, "tenant" if tenant else "operator", salt, hash_secret(salt, secret), description),
        )
    return key


def list_keys(dsn: str) -> list[dict]:
    with _admin_transaction(dsn) as cur:
        cur.execute(
            "SELECT key_id, tenant, role, description, created_at, revoked_at FROM api_keys ORDER BY created_at"
        )
        return [
            {
                "key_id": k,
                "tenant": t,
                "role": r,
                "description": d,
                "created_at": c.isoformat(),
                "revoked_at": v.isoformat() if v else None,
            }
            for k, t, r, d, c, v in cur.fetchall()
        ]


def revoke_key(dsn: str, key_id: str) -> bool:
    with _admin_transaction(dsn) as cur:
        cur.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,))
        return cur.rowcount == 1


def set_limits(dsn: str, tenant: str, *, rate_rps: float | None, burst: int | None) -> None:
    with _admin_transaction(dsn) as cur:
        ensure_tenant(cur, tenant, rate_rps=rate_rps, burst=burst)
