"""The inference log: every prediction the router serves becomes a row in PostgreSQL.

Three promises, in this order:

1. Never on the request path. `log()` puts the record on a bounded in-memory queue and returns;
   one background thread per process writes batches (one transaction each).
2. Never fails a request. `log()` and `log_many()` never raise and never block on the database.
3. Never loses a row, even when the process dies. `log()` first appends the row to this
   process's journal on local disk (inferencedb/journal.py: one `write`, no fsync), so it is there
   before the answer leaves; only then is it queued for PostgreSQL. A journal segment whose
   rows were all committed is deleted; one with rows the database did not take (unreachable,
   queue full, shutdown) is left as a spool file (inferencedb/spool.py), and so are the segments of a
   process that died. The writer replays spool files once the database answers, and at start
   for files other processes left. Rows carry their own key (row_id, created_at) and are
   inserted with ON CONFLICT DO NOTHING, so rows committed before a crash or whose
   acknowledgement was lost end up in the table exactly once. Rows PostgreSQL refuses for their
   content go to a `rejected-*.jsonl` file with the error, never silently away; a row that can
   be written neither to the journal nor to PostgreSQL is counted and logged at ERROR.

The queue is bounded in rows and in bytes (`queue_size`, `queue_max_bytes`): past either, a row
stays in the journal only and is replayed from there.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.extras

from inferencedb import pg
from inferencedb.journal import Journal, Segment
from inferencedb.prediction_record import COLUMNS, PredictionRecord, copy_text, record_to_row, row_values
from inferencedb.spool import REJECTED_PREFIX, ClaimedSpoolFile, SpoolWriter, claim_next, encode_lines, waiting_files

log = logging.getLogger(__name__)

_CASTS = {"row_id": "uuid", "created_at": "timestamptz", "item_index": "integer", "top_k": "jsonb"}
_INSERT = f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES %s ON CONFLICT DO NOTHING"
_COPY = f"COPY predictions ({', '.join(COLUMNS)}) FROM STDIN"
_UNIQUE_VIOLATION = "23505"
_TEMPLATE = "(" + ", ".join(f"%s::{_CASTS[c]}" if c in _CASTS else "%s" for c in COLUMNS) + ")"
_PARTITION_INTERVAL_S = 3600.0
_PARTITION_RETRY_S = 60.0
_WAKE_S = 0.05  # while gathering a batch, how often the writer drains what arrived and looks at close()


@dataclass(frozen=True)
class InferenceLogStats:
    """Counters since start (rows unless named otherwise) and gauges, for Prometheus."""

    queue_depth: int  # records waiting in memory
    queue_bytes: int  # their size as journal lines
    written: int  # rows from the queue committed to PostgreSQL
    spooled: int  # rows left in the journal for replay, not committed by this process (overflow included)
    overflow_spooled: int  # of which never queued: the queue was full (or the writer not running)
    replayed: int  # rows from spool files sent and committed (rows already there count, and are skipped)
    failed_batches: int  # database attempts that failed (each sent its rows to the spool)
    rejected: int  # rows PostgreSQL refused for their content, kept in rejected-*.jsonl
    skipped_lines: int  # unreadable spool lines (a truncated last line after a crash)
    lost: int  # rows written nowhere (journal not writable, and the database did not take them)
    spool_files: int  # files waiting for replay in spool_dir, all processes
    db_healthy: bool
    last_error: str | None


# The counters of InferenceLogStats; also the events passed to the observer as (event, rows).
COUNTERS = ("written", "spooled", "overflow_spooled", "replayed", "failed_batches", "rejected", "skipped_lines", "lost")

_PASSWORD = re.compile(r"(password\s*=\s*)\S+|(://[^:/@\s]+:)[^@\s]+@", re.I)


def redact(text: str) -> str:
    """`text` with passwords in DSNs or connection strings replaced by ***."""
    return _PASSWORD.sub(lambda m: f"{m.group(1)}***" if m.group(1) else f"{m.group(2)}***@", text)


class _DatabaseUnavailable(Exception):
    """Anything that is not the rows' fault: the rows should be spooled and retried later."""


class _StopReplay(Exception):
    """Replay gives way: the process is closing, or the database failed for the live queue."""


@dataclass(frozen=True, slots=True)
class _Entry:
    """A queued row, its journal segment (None if the journal could not take it) and its size."""

    row: dict
    segment: Segment | None
    size: int


# What close() puts in the queue to wake a writer that waits for a first row: not a row.
_WAKE_UP = _Entry({}, None, 0)


def _is_data_error(error: BaseException) -> bool:
    """Whether the failure is caused by the rows themselves (retrying cannot help): SQLSTATE
    class 22 (data exception) or 23 (integrity constraint), or a value psycopg2 cannot send."""
    if isinstance(error, ValueError | TypeError):
        return True
    code = getattr(error, "pgcode", None) or ""
    return code[:2] in ("22", "23")


# --- the writer -------------------------------------------------------------------------------------


class InferenceLog:
    """Writes PredictionRecords to the `predictions` table from one background thread.

    Create and `start()` one per process, after forking (gunicorn: in the worker, not the
    master); `close()` at shutdown. Every process of one router may share `spool_dir`.

    `observer(event, rows)`, if given, is called for each counter increment (events: COUNTERS),
    from the writer thread or, for overflow, from the logging thread; it must be quick. Records
    logged before `start()` wait in the queue (or, once it is full, in the spool).
    """

    def __init__(
        self,
        dsn: str,
        *,
        spool_dir: Path,
        queue_size: int = 10_000,
        queue_max_bytes: int = 32 << 20,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        retry_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        replay_interval_s: float = 5.0,
        partitions_ahead_days: int = 7,
        partitions_back_days: int = 1,
        fsync_interval_s: float = 1.0,
        connect_timeout_s: float = 3.0,
        statement_timeout_s: float = 10.0,
        name: str = "inference-log",
        observer: Callable[[str, int], None] | None = None,
    ):
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        self._dsn = dsn
        self.spool_dir = Path(spool_dir)
        self.name = name
        self._queue: queue.Queue[_Entry] = queue.Queue(maxsize=queue_size)
        self._queue_max_bytes = queue_max_bytes
        self._queued_bytes = 0
        self._queued_bytes_lock = threading.Lock()
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._retry_backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        self._replay_interval_s = replay_interval_s
        self._partitions_ahead_days = partitions_ahead_days
        self._partitions_back_days = partitions_back_days
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_s = statement_timeout_s
        self._observer = observer
        self._journal = Journal(self.spool_dir, fsync_interval_s=fsync_interval_s)
        self._rejected_file = SpoolWriter(self.spool_dir, prefix=REJECTED_PREFIX, fsync_interval_s=0.0)

        self._counts = dict.fromkeys(COUNTERS, 0)
        self._counts_lock = threading.Lock()
        self._last_error: str | None = None
        self._conn = None
        self._healthy = True  # optimistic until the first attempt says otherwise
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._next_replay = 0.0
        self._next_partitions = 0.0
        self._in_flight: list[_Entry] = []
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closing = threading.Event()
        self._closed = False
        self._child_pid: int | None = None

    # -- public API

    def start(self) -> InferenceLog:
        """Start the writer thread. It creates partitions and replays leftover spool files first."""
        if self._thread is not None:
            return self
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        atexit.register(self.close)
        log.info("%s started (spool %s)", self.name, self.spool_dir)
        return self

    def log(self, record: PredictionRecord) -> None:
        """Hand over one record: on disk when this returns, in PostgreSQL soon. Never blocks on the
        database, never raises."""
        try:
            self._accept(record)
        except Exception:  # noqa: BLE001 - promise 2: a request never fails because of logging
            log.exception("%s: could not accept a record", self.name)

    def log_many(self, records: Iterable[PredictionRecord]) -> None:
        """`log()` each record (one HTTP request usually yields several)."""
        try:
            for record in records:
                self.log(record)
        except Exception:  # noqa: BLE001 - iterating the caller's records failed; still never raise
            log.exception("%s: could not accept records", self.name)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write out what is queued to PostgreSQL within `timeout_s`, then stop; whatever is not
        committed by then (database down or hanging) stays in the journal for replay. A row that
        ends up both committed and replayed is harmless: replay skips it."""
        if self._closed:
            return
        self._closing.set()
        with contextlib.suppress(queue.Full):  # a full queue wakes the writer by itself
            self._queue.put_nowait(_WAKE_UP)
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout_s)
        # From here log() leaves rows in the journal by itself; one it queued just before is drained below.
        self._closed = True
        stuck = self._thread is not None and self._thread.is_alive()
        leftovers = list(self._in_flight) if stuck else []
        leftovers += self._drain_nowait(None)
        if leftovers:
            why = f"writer still busy after {timeout_s:g} s" if stuck else "writer not running"
            log.warning("%s: %s, leaving %d rows in the journal for replay", self.name, why, len(leftovers))
            self._leave_for_replay(leftovers)
        self._journal.close()
        self._rejected_file.close()
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        log.info("%s closed: %s", self.name, self.stats())

    def stats(self) -> InferenceLogStats:
        with self._counts_lock:
            counts = dict(self._counts)
        held = self._journal.dirty_segments  # first: see Journal.dirty_segments
        return InferenceLogStats(
            queue_depth=self._queue.qsize(),
            queue_bytes=self._queued_bytes,
            spool_files=held + len(waiting_files(self.spool_dir)),
            db_healthy=self._healthy,
            last_error=self._last_error,
            **counts,
        )

    def __enter__(self) -> InferenceLog:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- counting

    def _count(self, event: str, n: int) -> None:
        if n <= 0:
            return
        with self._counts_lock:
            self._counts[event] += n
        if self._observer is not None:
            try:
                self._observer(event, n)
            except Exception:  # noqa: BLE001 - metrics must not break logging
                log.debug("observer failed", exc_info=True)

    def _set_error(self, error: BaseException) -> None:
        self._last_error = redact(f"{type(error).__name__}: {error}".strip())[:500]

    # -- spooling

    def _safe_row(self, record: PredictionRecord) -> dict | None:
        try:
            return record_to_row(record)
        except Exception as e:  # noqa: BLE001 - a malformed record must not stop the writer
            self._reject([{"unconvertible_record": repr(record)[:10_000]}], e)
            return None

    def _in_forked_child(self) -> None:
        """We were forked after start(): the writer thread stayed in the parent, and any lock a
        parent thread held at fork time stays held here forever. Fresh locks; from now on every
        row stays in this process's journal, replayed by the parent once this process is gone."""
        if self._child_pid != os.getpid():
            self._child_pid = os.getpid()
            self._counts_lock = threading.Lock()
            self._queued_bytes_lock = threading.Lock()
            log.warning("%s: used in a forked child without its own start(): journaling every record", self.name)

    def _accept(self, record: PredictionRecord) -> None:
        row = self._safe_row(record)
        if row is None:
            return
        line = encode_lines([row])
        entry = _Entry(row, self._journal_append(line), len(line))
        if os.getpid() != self._pid:
            self._in_forked_child()
            self._leave_for_replay([entry], overflow=True)
            return
        if self._closed or not self._reserve(entry.size):
            self._leave_for_replay([entry], overflow=True)
            return
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self._release(entry.size)
            self._leave_for_replay([entry], overflow=True)
            return
        if self._closed:  # close() finished between our check and our put: nobody will drain it
            self._leave_for_replay(self._drain_nowait(None))

    def _journal_append(self, line: bytes) -> Segment | None:
        try:
            return self._journal.append(line)
        except OSError as e:
            self._set_error(e)
            log.error("%s: journal %s not writable (%s): this row is in memory only", self.name, self.spool_dir, e)
            return None

    def _reserve(self, size: int) -> bool:
        with self._queued_bytes_lock:
            if self._queued_bytes + size > self._queue_max_bytes:
                return False
            self._queued_bytes += size
            return True

    def _release(self, size: int) -> None:
        with self._queued_bytes_lock:
            self._queued_bytes -= size

    def _leave_for_replay(self, entries: list[_Entry], *, overflow: bool = False) -> None:
        """These rows will not be committed by this process's queue: they wait in the journal."""
        journaled = [e.segment for e in entries if e.segment is not None]
        self._journal.resolve(journaled, committed=False)
        self._count("spooled", len(journaled))
        if overflow:
            self._count("overflow_spooled", len(journaled))
        lost = len(entries) - len(journaled)
        if lost:
            self._count("lost", lost)
            log.error(
                "%s: LOST %d prediction rows: PostgreSQL did not take them and the journal %s is not writable (%s)",
                self.name,
                lost,
                self.spool_dir,
                self._last_error,
            )

    def _reject(self, rows: list[dict], error: BaseException) -> None:
        message = redact(f"{type(error).__name__}: {error}".strip())[:500]
        try:
            self._rejected_file.append([{"error": message, "row": row} for row in rows])
        except OSError as e:
            self._count("lost", len(rows))
            log.error(
                "%s: LOST %d rows PostgreSQL refused (%s); rejected file not writable: %s",
                self.name,
                len(rows),
                message,
                e,
            )
            return
        self._count("rejected", len(rows))
        log.error(
            "%s: PostgreSQL refused %d rows (%s); kept in %s", self.name, len(rows), message, self._rejected_file.path
        )

    # -- database

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = pg.connect(
                self._dsn,
                application_name=f"manyheads-{self.name}",
                statement_timeout_s=self._statement_timeout_s,
                connect_timeout_s=self._connect_timeout_s,
            )
        return self._conn

    def _deadline(self, conn):
        """Bounds one exchange with the database, even with a server that never answers."""
        return pg.deadline(conn, self._statement_timeout_s + 1.0)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def _db_worth_trying(self) -> bool:
        return self._healthy or time.monotonic() >= self._retry_at

    def _mark_failure(self, error: BaseException, *, count: bool = True) -> None:
        if count:
            self._count("failed_batches", 1)
        self._set_error(error)
        self._drop_connection()
        self._backoff_s = min(self._max_backoff_s, self._backoff_s * 2 if self._backoff_s else self._retry_backoff_s)
        self._retry_at = time.monotonic() + self._backoff_s
        if self._healthy:
            log.warning("%s: PostgreSQL unavailable, spooling to %s: %s", self.name, self.spool_dir, self._last_error)
        self._healthy = False

    def _mark_success(self) -> None:
        if not self._healthy:
            log.info("%s: PostgreSQL is back; replaying the spool", self.name)
            self._next_replay = 0.0
        self._healthy = True
        self._backoff_s = 0.0

    def _insert(self, rows: list[dict], *, fresh: bool = False) -> int:
        """Insert rows (each transaction all-or-nothing); returns how many were accepted.
        Raises _DatabaseUnavailable. A connection found dead is replaced and retried once at
        once, since after a server restart the first statement on the old connection fails.

        `fresh`: rows from the live queue, which the table cannot hold yet, go by COPY (see
        _insert_or_reject); rows replayed from a spool file may be there already."""
        reused = self._conn is not None and not self._conn.closed
        try:
            return self._insert_or_reject(self._connect_or_raise(), rows, fresh=fresh)
        except _DatabaseUnavailable:
            self._drop_connection()
            if not reused:
                raise
        return self._insert_or_reject(self._connect_or_raise(), rows, fresh=fresh)

    def _connect_or_raise(self):
        try:
            return self._connection()
        except Exception as e:  # noqa: BLE001 - any failure to connect means: spool and retry later
            raise _DatabaseUnavailable(e) from e

    def _insert_or_reject(self, conn, rows: list[dict], *, fresh: bool = False) -> int:
        """One transaction for `rows`; if PostgreSQL refuses them for their content, halve until
        the culprit rows are alone and reject those, so one bad row cannot block a batch.

        Fresh rows go by COPY in text format: per 200 rows it takes half the writer's CPU of the
        INSERT (whose parameters psycopg2 quotes one by one in Python, holding the GIL that
        request threads wait for) and less of PostgreSQL's. COPY has no ON CONFLICT: a batch
        that meets a row already committed (its first commit's acknowledgement was lost, then
        `_insert` retried it) is sent again as the INSERT, which skips those rows."""
        try:
            with self._deadline(conn), conn, conn.cursor() as cur:
                if fresh:
                    cur.copy_expert(_COPY, io.StringIO(copy_text(rows)))
                else:
                    psycopg2.extras.execute_values(
                        cur, _INSERT, [row_values(r) for r in rows], template=_TEMPLATE, page_size=len(rows)
                    )
            return len(rows)
        except Exception as e:  # noqa: BLE001 - classified just below
            if fresh and getattr(e, "pgcode", None) == _UNIQUE_VIOLATION:
                return self._insert_or_reject(conn, rows)
            if not _is_data_error(e):
                raise _DatabaseUnavailable(e) from e
            if len(rows) == 1:
                self._reject(rows, e)
                return 0
            mid = len(rows) // 2
            return self._insert_or_reject(conn, rows[:mid], fresh=fresh) + self._insert_or_reject(
                conn, rows[mid:], fresh=fresh
            )

    def _probe(self) -> None:
        try:
            conn = self._connect_or_raise()
            with self._deadline(conn), conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
        except Exception as e:  # noqa: BLE001 - still down: back off further
            self._mark_failure(e.__cause__ or e, count=False)
            return
        self._mark_success()

    def _ensure_partitions(self) -> None:
        try:
            conn = self._connect_or_raise()
            with self._deadline(conn), conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT ensure_prediction_partitions(%s, %s)",
                    (self._partitions_back_days, self._partitions_ahead_days),
                )
                created = cur.fetchone()[0]
        except Exception as e:  # noqa: BLE001 - the default partition catches rows meanwhile
            self._next_partitions = time.monotonic() + _PARTITION_RETRY_S
            self._drop_connection()
            log.warning(
                "%s: could not create partitions (retry in %.0f s): %s", self.name, _PARTITION_RETRY_S, redact(str(e))
            )
            return
        self._next_partitions = time.monotonic() + _PARTITION_INTERVAL_S
        if created:
            log.info("%s: created %d daily partitions", self.name, created)

    # -- the writer thread

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            self._housekeeping()  # partitions and leftover spool files before anything else
        while True:
            try:
                closing = self._closing.is_set()
                batch = self._take_batch(linger=not closing)
                if batch:
                    self._write(batch)
                elif closing:
                    break
                if not closing:
                    self._housekeeping()
            except Exception:  # noqa: BLE001 - the writer thread must survive anything
                log.exception("%s: writer loop error", self.name)
                time.sleep(min(1.0, self._flush_interval_s))
        self._drop_connection()

    def _housekeeping(self) -> None:
        now = time.monotonic()
        self._journal.maintain()
        if not self._db_worth_trying():
            return
        if not self._healthy:
            self._probe()  # no batch may come to find out that the database is back
        if self._healthy and now >= self._next_partitions:
            self._ensure_partitions()
        if self._healthy and now >= self._next_replay:
            self._next_replay = now + self._replay_interval_s
            self._replay_spool()

    def _dequeue(self, timeout: float | None = None) -> _Entry | None:
        """The next queued row, waiting up to `timeout` (None: not at all); None for close()'s
        wake-up. queue.Empty when there is none."""
        entry = self._queue.get(timeout=timeout) if timeout is not None else self._queue.get_nowait()
        if entry is _WAKE_UP:
            return None
        self._release(entry.size)
        return entry

    def _drain_nowait(self, limit: int | None) -> list[_Entry]:
        entries: list[_Entry] = []
        while limit is None or len(entries) < limit:
            try:
                entry = self._dequeue()
            except queue.Empty:
                break
            if entry is not None:
                entries.append(entry)
        return entries

    def _take_batch(self, *, linger: bool) -> list[_Entry]:
        """Up to batch_size records: waits up to flush_interval_s for the first, then (lingering)
        gathers more until the batch is full or flush_interval_s has passed since the first.
        The wait for the first row is one blocking `get`, which close() ends with its wake-up: an
        idle writer wakes once per flush_interval_s (its housekeeping), not every _WAKE_S.

        While lingering the writer sleeps and drains what arrived at each slice's end instead of
        blocking on the queue: a blocked `get` is woken by every `put`, which made each request
        pay a thread wake-up and a GIL hand-off to the writer (a fifth of the router's CPU time
        under load)."""
        batch: list[_Entry] = []
        deadline = time.monotonic() + self._flush_interval_s
        while not batch:
            waiting = linger and not self._closing.is_set()
            try:
                entry = self._dequeue(timeout=max(0.001, deadline - time.monotonic()) if waiting else None)
            except queue.Empty:
                return []
            if entry is not None:
                batch.append(entry)
            elif not linger or self._closing.is_set():  # close()'s wake-up
                return []
        deadline = time.monotonic() + self._flush_interval_s
        while len(batch) < self._batch_size:
            batch += self._drain_nowait(self._batch_size - len(batch))
            remaining = deadline - time.monotonic()
            if len(batch) >= self._batch_size or not linger or remaining <= 0 or self._closing.is_set():
                break
            self._closing.wait(min(_WAKE_S, remaining))
        return batch

    def _write(self, entries: list[_Entry]) -> None:
        if not entries:
            return
        rows = [e.row for e in entries]
        self._in_flight = entries
        try:
            if self._db_worth_trying():
                try:
                    written = self._insert(rows, fresh=True)
                except _DatabaseUnavailable as e:
                    self._mark_failure(e.__cause__ or e)
                except Exception as e:  # noqa: BLE001 - unexpected, but the rows still go somewhere
                    log.exception("%s: unexpected error writing a batch", self.name)
                    self._mark_failure(e)
                else:
                    self._count("written", written)
                    self._mark_success()
                    self._journal.resolve([e.segment for e in entries], committed=True)
                    return
            self._leave_for_replay(entries)
        finally:
            self._in_flight = []

    def _replay_spool(self) -> None:
        """Replay every claimable spool file: those our journal let go of, and other processes'."""
        while self._healthy and not self._closing.is_set():
            claimed = claim_next(self.spool_dir)
            if claimed is None:
                return
            self._replay_file(claimed)

    def _replay_file(self, claimed: ClaimedSpoolFile) -> None:
        def on_bad_line(number: int, raw: bytes, truncated: bool) -> None:
            self._count("skipped_lines", 1)
            what = "truncated last line (writer crashed mid-write?)" if truncated else "unreadable line"
            log.warning("%s: %s: skipping %s %d (%d bytes)", self.name, claimed.path.name, what, number, len(raw))
            if not truncated:
                self._reject([{"unreadable_spool_line": raw.decode("utf-8", "replace")}], ValueError(what))

        replayed = 0
        try:
            chunk: list[dict] = []
            for row in claimed.rows(on_bad_line):
                chunk.append(row)
                if len(chunk) >= self._batch_size:
                    replayed += self._replay_chunk(chunk)
                    chunk = []
                    self._write_some_of_queue()
            if chunk:
                replayed += self._replay_chunk(chunk)
        except _DatabaseUnavailable as e:
            self._mark_failure(e.__cause__ or e)
            claimed.release()
            log.warning("%s: replay of %s interrupted; it will be retried", self.name, claimed.path.name)
            return
        except _StopReplay:
            claimed.release()
            return
        except Exception:
            claimed.release()
            raise
        claimed.done()
        log.info("%s: replayed %d rows from %s", self.name, replayed, claimed.path.name)

    def _replay_chunk(self, rows: list[dict]) -> int:
        if self._closing.is_set() or not self._healthy:  # the file stays claimable for later
            raise _StopReplay
        n = self._insert(rows)
        self._count("replayed", n)
        return n

    def _write_some_of_queue(self) -> None:
        """Between replay chunks, keep the live queue moving so it does not overflow meanwhile."""
        if self._queue.qsize() >= self._batch_size:
            self._write(self._take_batch(linger=False))
