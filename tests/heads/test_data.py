import json

import pytest

from heads.data import check_label_support, read_file
from heads.errors import DataError
from tests.datasets import write_csv


def test_csv_with_embedded_newlines_and_fingerprint(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("line one\nline two", "a"), (" padded ", "b")])
    data = read_file(path)
    assert data.texts == ["line one\nline two", " padded "] and data.labels == ["a", "b"]
    assert data.fingerprint() == read_file(path).fingerprint()
    other = write_csv(tmp_path / "e.csv", [("line one\nline two", "a"), (" padded ", "c")])
    assert read_file(other).fingerprint() != data.fingerprint()


def test_missing_column_names_what_was_found(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("hi", "a")], header=("utterance", "label"))
    with pytest.raises(DataError, match=r"missing column\(s\) text \(found: utterance, label\)"):
        read_file(path)


def test_empty_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        read_file(tmp_path / "empty.csv")
    header_only = write_csv(tmp_path / "header.csv", [])
    with pytest.raises(DataError, match="no rows"):
        read_file(header_only)


@pytest.mark.parametrize("bad_text", ["", "   ", "\u200b"])
def test_empty_text_names_the_row(tmp_path, bad_text):
    path = write_csv(tmp_path / "d.csv", [("fine", "a"), ("also fine", "a"), (bad_text, "b")])
    with pytest.raises(DataError, match=r"d.csv row 3: empty text"):
        read_file(path)


def test_jsonl_nan_null_and_bad_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": NaN, "label": "a"}\n')
    with pytest.raises(DataError, match="row 2: empty text"):
        read_file(path)
    path.write_text('{"text": "ok", "label": null}\n')
    with pytest.raises(DataError, match="row 1: empty label"):
        read_file(path)
    path.write_text('{"text": "ok", "label": "a"}\n{oops\n')
    with pytest.raises(DataError, match="row 2: not valid JSON"):
        read_file(path)
    path.write_text(json.dumps({"utterance": "ok", "label": "a"}) + "\n")
    with pytest.raises(DataError, match="row 1: missing key 'text'"):
        read_file(path)


def test_single_example_label_is_refused_with_its_row(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("a1", "a"), ("a2", "a"), ("lonely", "b"), ("a3", "a")])
    with pytest.raises(DataError, match=r"1 label\(s\) with fewer than 2 examples: 'b' \(1 at row 3\)"):
        check_label_support(read_file(path), 2)


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "d.parquet").write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        read_file(tmp_path / "d.parquet")
    with pytest.raises(DataError, match="no such file"):
        read_file(tmp_path / "nope.csv")
