"""Text normalisation shared by training, the embedder and the routers.

The rule: normalising a text must never change its embedding, so the phrase cache can key on the
normalised form and merge texts that differ only in ways the model cannot see.

- Unicode NFC: BERT-style tokenizers decompose (NFD) before stripping accents, and
  NFD(NFC(x)) == NFD(x), so composing first changes nothing for them.
- Whitespace runs collapse to one space and the ends are stripped. "Whitespace" is exactly what a
  BERT tokenizer splits on (space, tab, newline, carriage return and the Unicode `Zs` category);
  other characters that Python calls whitespace (form feed, U+2028, ...) are kept, because a BERT
  tokenizer deletes some of them and treats others as part of a word.
- Lower-casing only when the model's tokenizer lower-cases anyway (`lowercase=True`), and then
  character by character as the tokenizer does: Python's `str.lower()` alone would turn a
  word-final capital sigma into "ς" where the tokenizer gives "σ", a different token.

Pure Python: the routers import it, and they never import TensorFlow.
"""

from __future__ import annotations

import re
import unicodedata

# Tab, newline, carriage return, space and the Unicode category Zs (tests check this list
# against unicodedata, so a Unicode update shows up as a failing test, not a silent change).
BERT_WHITESPACE = (
    "\t\n\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
)
_WHITESPACE_RUN = re.compile(f"[{BERT_WHITESPACE}]+")


def normalize_text(text: str, *, lowercase: bool = False) -> str:
    """The form of `text` that the cache keys on and the model sees."""
    text = _WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFC", text)).strip(" ")
    if not lowercase:
        return text
    # Final sigma is the only context-dependent mapping str.lower() applies.
    return text.lower() if "\u03a3" not in text else "".join(ch.lower() for ch in text)


def is_blank(text: str) -> bool:
    """True when the text holds nothing but whitespace and invisible control or format
    characters (any Unicode notion of either): there is nothing to classify, so it is refused."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in text)
