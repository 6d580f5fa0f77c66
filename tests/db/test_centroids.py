"""The live-centroid accumulator writes in small statements and keeps what a failed one did not write."""

from __future__ import annotations

import struct

import numpy as np
import psycopg2
import pytest

from inferencedb import centroids
from inferencedb.database import Database
from inferencedb.errors import DatabaseUnavailable


def read_copy(data: bytes) -> list[tuple]:
    """(tenant, model, version, n, vector_sum as a list) of each row of a binary COPY stream."""
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00" and data[-2:] == b"\xff\xff"
    rows, at = [], 19
    while struct.unpack_from("!h", data, at)[0] == 6:
        at += 2 + 4 + 8  # field count, then the bucket's length and value
        texts = []
        for _ in range(3):
            (length,) = struct.unpack_from("!i", data, at)
            texts.append(data[at + 4 : at + 4 + length].decode())
            at += 4 + length
        (n,) = struct.unpack_from("!q", data, at + 4)
        length, _, _, _, dim, _ = struct.unpack_from("!iiiiii", data, at + 12)
        values = [struct.unpack_from("!d", data, at + 40 + 12 * i)[0] for i in range(dim)]
        rows.append((*texts, n, values))
        at += 12 + 4 + length
    return rows


class FlakyDatabase:
    def __init__(self, fail_on_call: int):
        self.calls, self.rows, self._fail_on = 0, [], fail_on_call

    def copy_binary(self, sql, data):
        self.calls += 1
        if self.calls == self._fail_on:
            raise DatabaseUnavailable("the inference database is unavailable (OperationalError)")
        self.rows.extend(read_copy(data))


def test_a_flush_of_many_models_is_cut_into_statements_and_a_failure_loses_nothing():
    db = FlakyDatabase(fail_on_call=2)
    accumulator = centroids.CentroidAccumulator(db)
    models = [f"m{i}" for i in range(centroids.ROWS_PER_STATEMENT * 2 + 5)]
    for model in models:
        accumulator.add("acme", model, "v1", np.ones((2, 3), np.float32))
    assert accumulator.flush(force=True) == centroids.ROWS_PER_STATEMENT  # the second statement failed
    accumulator.add("acme", models[-1], "v1", np.ones((1, 3), np.float32))  # more traffic meanwhile
    assert accumulator.flush(force=True) == len(models) - centroids.ROWS_PER_STATEMENT
    assert sorted(row[1] for row in db.rows) == sorted(models)  # every model once, none lost
    last = next(row for row in db.rows if row[1] == models[-1])
    assert last[3] == 3 and last[4] == [3.0, 3.0, 3.0]  # merged with the sums that were kept


def test_the_sums_reach_postgresql_exactly(db):
    database = Database(db)
    accumulator = centroids.CentroidAccumulator(database)
    rng = np.random.default_rng(7)
    vectors = {f"m{i}": rng.standard_normal((3, 384)).astype(np.float32) for i in range(70)}  # two statements
    for model, batch in vectors.items():
        accumulator.add("acme", model, "v1", batch)
    assert accumulator.flush(force=True) == 70
    database.close()
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT model, n, vector_sum, array_send(vector_sum) FROM embedding_centroids WHERE tenant = 'acme'"
        )
        stored = {model: (n, np.array(total), binary) for model, n, total, binary in cur.fetchall()}
    assert set(stored) == set(vectors)
    for model, batch in vectors.items():
        n, total, binary = stored[model]
        assert n == 3 and np.array_equal(total, batch.sum(axis=0, dtype=np.float64))  # float64, bit for bit
        # what drift reads: the binary form, decoded to the same values
        decoded = centroids.float8_array(binary)
        assert decoded.dtype == np.float64 and np.array_equal(decoded, total)


def test_the_sums_are_stored_without_a_compression_attempt(db):
    """Migration 0011: sums of embeddings do not compress, and trying cost PostgreSQL about half of
    each row's write."""
    database = Database(db)
    accumulator = centroids.CentroidAccumulator(database)
    accumulator.add("acme", "wide", "v1", np.random.default_rng(8).standard_normal((2, 1152)).astype(np.float32))
    assert accumulator.flush(force=True) == 1
    database.close()
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'embedding_centroids'::regclass"
            " AND attname = 'vector_sum'"
        )
        assert cur.fetchone() == ("e",)  # EXTERNAL: out of line, never compressed
        cur.execute(
            "SELECT pg_column_size(vector_sum), pg_column_compression(vector_sum) FROM embedding_centroids"
            " WHERE tenant = 'acme' AND model = 'wide'"
        )
        size, compression = cur.fetchone()
        assert compression is None and size >= 1152 * 8  # stored whole, as written


def test_only_a_one_dimensional_double_array_decodes():
    two_dimensions = struct.pack("!iiiiiii", 2, 0, 701, 1, 1, 1, 1)
    integers = struct.pack("!iiiii", 1, 0, 23, 1, 1) + struct.pack("!ii", 4, 7)
    for data in (two_dimensions, integers):
        with pytest.raises(ValueError, match="not a one-dimensional double precision"):
            centroids.float8_array(data)
