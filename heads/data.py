"""Training data: CSV / JSONL files or a SQL query, checked row by row.

Every problem is reported with the source and the row (1-based, header excluded), because a
data scientist fixing a 15,000-row file needs to know where to look.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from embedder.normalize import is_blank
from heads.errors import DataError


@dataclass(frozen=True)
class Dataset:
    texts: list[str]
    labels: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """sha256 over every (text, label) pair in order: identifies exactly what was trained on."""
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels):
            digest.update(text.encode())
            digest.update(b"\x1f")
            digest.update(label.encode())
            digest.update(b"\x1e")
        return digest.hexdigest()

    def label_counts(self) -> Counter:
        return Counter(self.labels)


def _missing(value) -> bool:
    """None, NaN, or a string with nothing the embedder would accept (see embedder.normalize)."""
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and is_blank(value))
    )


def _check_rows(rows: list[tuple[int, object, object]], source: str) -> Dataset:
    texts, labels = [], []
    for row_number, text, label in rows:
        if _missing(text):
            raise DataError(f"{source} row {row_number}: empty text")
        if _missing(label):
            raise DataError(f"{source} row {row_number}: empty label")
        if not isinstance(text, str):
            raise DataError(f"{source} row {row_number}: text must be a string, got {type(text).__name__}")
        texts.append(text)
        labels.append(str(label).strip())
    if not texts:
        raise DataError(f"{source}: no rows")
    return Dataset(texts, labels, source)


def _read_csv(path: Path, text_column: str, label_column: str) -> Dataset:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if not header:
            raise DataError(f"{path}: empty file (no header row)")
        missing = [c for c in (text_column, label_column) if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header)})")
        rows = [(i, r.get(text_column), r.get(label_column)) for i, r in enumerate(reader, start=1)]
    return _check_rows(rows, str(path))


def _read_jsonl(path: Path, text_column: str, label_column: str) -> Dataset:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} row {i}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path} row {i}: expected a JSON object")
            for column in (text_column, label_column):
                if column not in record:
                    raise DataError(f"{path} row {i}: missing key {column!r} (found: {', '.join(record)})")
            rows.append((i, record[text_column], record[label_column]))
    return _check_rows(rows, str(path))


def read_file(path: str | Path, *, text_column: str = "text", label_column: str = "label") -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return _read_jsonl(path, text_column, label_column)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return _read_csv(path, text_column, label_column)
    raise DataError(f"{path}: unknown file type {path.suffix!r} (use .csv or .jsonl)")


def read_sql(
    dsn: str,
    query: str,
    params: tuple | dict | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    source: str = "SQL query",
) -> Dataset:
    """Rows of a SQL query (e.g. predictions joined with corrected labels from the inference
    database). The query must return the text and label columns by name."""
    import psycopg2

    try:
        conn = psycopg2.connect(dsn, connect_timeout=10)
    except psycopg2.Error as exc:
        raise DataError(f"{source}: cannot connect: {str(exc).strip()}") from None
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, params)
            columns = [d.name for d in cur.description or []]
            missing = [c for c in (text_column, label_column) if c not in columns]
            if missing:
                raise DataError(f"{source}: missing column(s) {', '.join(missing)} (found: {', '.join(columns)})")
            t, lab = columns.index(text_column), columns.index(label_column)
            rows = [(i, r[t], r[lab]) for i, r in enumerate(cur.fetchall(), start=1)]
    except psycopg2.Error as exc:
        raise DataError(f"{source} failed: {str(exc).strip()}") from None
    finally:
        conn.close()
    return _check_rows(rows, source)


def concatenate(parts: list[Dataset]) -> Dataset:
    if len(parts) == 1:
        return parts[0]
    return Dataset(
        [t for p in parts for t in p.texts],
        [label for p in parts for label in p.labels],
        " + ".join(p.source for p in parts),
    )


def check_label_support(dataset: Dataset, minimum: int) -> None:
    """Every label needs `minimum` examples to be learned and split for validation."""
    counts = dataset.label_counts()
    thin = sorted(label for label, n in counts.items() if n < minimum)
    if thin:
        where = {label: dataset.labels.index(label) + 1 for label in thin}
        detail = ", ".join(f"{label!r} ({counts[label]} at row {where[label]})" for label in thin[:10])
        more = f" and {len(thin) - 10} more" if len(thin) > 10 else ""
        raise DataError(
            f"{dataset.source}: {len(thin)} label(s) with fewer than {minimum} examples: {detail}{more}; "
            "add examples or remove the label"
        )


def unknown_labels(dataset: Dataset, known: set[str]) -> list[str]:
    return sorted(set(dataset.labels) - known)
