import sys
import unicodedata

import pytest

from embedder.normalize import BERT_WHITESPACE, is_blank, normalize_text


def test_whitespace_set_is_exactly_what_bert_splits_on():
    computed = {ch for ch in map(chr, range(sys.maxunicode + 1)) if ch in "\t\n\r " or unicodedata.category(ch) == "Zs"}
    assert set(BERT_WHITESPACE) == computed


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  refund   my\torder \n", "refund my order"),
        ("a\u00a0\u3000b", "a b"),
        ("cafe\u0301", "caf\u00e9"),  # NFC composes
        ("line\u2028sep", "line\u2028sep"),  # not a BERT space: kept
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_lowercase_only_when_asked():
    assert normalize_text("Refund MY Order") == "Refund MY Order"
    assert normalize_text("Refund MY Order", lowercase=True) == "refund my order"


def test_lowercase_maps_each_character_alone_as_the_tokenizer_does():
    assert normalize_text("ΟΔΟΣ", lowercase=True) == "οδοσ"  # not the word-final "ς" of str.lower()


def test_normalize_is_idempotent():
    for text in ["  A\u00a0B  ", "ΟΔΟΣ Σ", "Ǆ x", "cafe\u0301"]:
        once = normalize_text(text, lowercase=True)
        assert normalize_text(once, lowercase=True) == once


@pytest.mark.parametrize("text", ["", " ", "\t\n", "\u3000", "\u200b", "\x00 \x1f", "\u2028"])
def test_blank_texts(text):
    assert is_blank(text)


@pytest.mark.parametrize("text", ["a", " ?! ", "\u200bx", "🍕"])
def test_non_blank_texts(text):
    assert not is_blank(text)
