"""Character n-gram heads: a linear model on hashed n-grams of the text itself, with no embedder.

Routers fall back to such a head while the embedding service is down: lower quality, but the
endpoint keeps answering. This module is the head's definition shared by training and serving,
numpy and stdlib only (routers never import TensorFlow): the trainer (heads/trainer.py) optimises
exactly `featurize -> sparse_dot -> softmax` as defined here, and `NgramHead` serves it.

The features of a text (scheme "char-ngram-v1"; changing any step needs a new scheme name, because
it changes what the weights of every saved head mean):

1. `normalize_text(text, lowercase=True)` (embedder/normalize.py: NFC, whitespace runs to one
   space, lower case), with one space added at each end so that n-grams at the start and end of a
   word differ from the same letters inside one;
2. every character n-gram for n in `ngram_range`, hashed with a fixed arithmetic hash of its code
   points (a polynomial hash finished with murmur3's fmix32), never Python's per-process salted
   `hash()`: the bucket is the low 31 bits modulo `buckets`, and bit 31 gives the n-gram a sign of
   +1 or -1, so n-grams that collide in a bucket tend to cancel rather than pile up;
3. per bucket, the signed count c becomes sign(c) * log1p(|c|) (sublinear term frequency), and
   each text's vector is scaled to unit L2 norm, so long texts do not get larger logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from embedder.normalize import normalize_text
from heads.network import softmax

SCHEME = "char-ngram-v1"
MAX_N = 8  # longer n-grams are almost all unique: they only add collisions
DEFAULT_RANGE = (2, 4)
# Measured on CLINC150 (151 classes, test in-scope top-1 accuracy, 2-4-grams): 2**13 buckets
# 92.7%, 2**14 93.0%, 2**15 93.1%, 2**16 93.2%, 2**17 93.0%; the weights grow 4 bytes per bucket
# and class, so 2**14 (9.9 MB for 151 classes) keeps nearly all the accuracy. Ranges 1-3 / 1-4 /
# 2-5 / 3-5 gave 92.4 / 93.1 / 93.2 / 92.8%.
DEFAULT_BUCKETS = 1 << 14
_SEED = np.uint32(0x811C9DC5)  # FNV's offset basis: n-grams of different lengths hash differently
_PRIME = np.uint32(0x01000193)  # FNV's 32-bit prime: odd, with well-spread bits
_LOW31 = np.uint32(0x7FFFFFFF)
_BIT31 = np.uint32(31)
# Texts featurized at once: bounds the temporaries on large splits to a few MB, and costs
# nothing for a router's batch.
_BLOCK = 256


def _fmix32(h: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finaliser (uint32 arithmetic wraps): every input bit affects every output
    bit, so the low bits (the bucket) and bit 31 (the sign) are independent of each other."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@dataclass(frozen=True)
class SparseRows:
    """Rows of a sparse matrix in CSR form: row r has values[indptr[r]:indptr[r + 1]] in columns
    indices[indptr[r]:indptr[r + 1]], sorted and unique within the row."""

    indptr: np.ndarray  # int64 [rows + 1]
    indices: np.ndarray  # int64 [non-zeros]
    values: np.ndarray  # float32 [non-zeros]
    width: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def concatenate(cls, parts: Sequence[SparseRows], width: int) -> SparseRows:
        offsets = np.cumsum([0] + [p.indptr[-1] for p in parts])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + offset for p, offset in zip(parts, offsets)])
        return cls(
            indptr.astype(np.int64),
            np.concatenate([np.zeros(0, np.int64)] + [p.indices for p in parts]),
            np.concatenate([np.zeros(0, np.float32)] + [p.values for p in parts]),
            width,
        )

    def take(self, rows: np.ndarray) -> SparseRows:
        """The given rows, in that order (a training mini-batch)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        positions = np.repeat(self.indptr[rows] - indptr[:-1], lengths) + np.arange(indptr[-1])
        return SparseRows(indptr, self.indices[positions], self.values[positions], self.width)

    def row_ids(self) -> np.ndarray:
        """The row of every non-zero."""
        return np.repeat(np.arange(len(self)), np.diff(self.indptr))

    def to_dense(self) -> np.ndarray:
        """[rows, width] float32; for tests and small inspections only."""
        dense = np.zeros((len(self), self.width), np.float32)
        dense[self.row_ids(), self.indices] = self.values
        return dense


def sparse_dot(rows: SparseRows, weights: np.ndarray) -> np.ndarray:
    """rows @ weights for a dense [width, k] matrix, touching only the non-zeros (a text has a
    few hundred of the buckets). One small BLAS product per row, values @ weights[columns]: in
    numpy that beats every vectorised segment sum (np.add.reduceat, np.add.at) several times over,
    and a row's result never depends on the other rows of its batch."""
    out = np.empty((len(rows), weights.shape[1]), dtype=np.result_type(weights, rows.values))
    bounds = rows.indptr.tolist()
    for r in range(len(rows)):
        lo, hi = bounds[r], bounds[r + 1]
        out[r] = rows.values[lo:hi] @ weights[rows.indices[lo:hi]]
    return out


@dataclass(frozen=True)
class NgramFeaturizer:
    """Texts to L2-normalised, sign-hashed, sublinear-TF character n-gram vectors (see the module
    docstring). Deterministic across processes, machines and Python versions."""

    ngram_range: tuple[int, int] = DEFAULT_RANGE
    buckets: int = DEFAULT_BUCKETS

    def __post_init__(self) -> None:
        low, high = self.ngram_range
        if not 1 <= low <= high <= MAX_N:
            raise ValueError(
                f"ngram_range must be [low, high] with 1 <= low <= high <= {MAX_N}, got {self.ngram_range}"
            )
        if not 1 <= self.buckets <= 1 << 31:
            raise ValueError(f"buckets must be in [1, 2**31], got {self.buckets}")

    def describe(self) -> dict:
        """What a version's manifest records to rebuild this featurizer (see `from_description`)."""
        return {"scheme": SCHEME, "ngram_range": list(self.ngram_range), "buckets": self.buckets}

    @classmethod
    def from_description(cls, description: dict) -> NgramFeaturizer:
        if description.get("scheme") != SCHEME:
            raise ValueError(f"unknown n-gram feature scheme {description.get('scheme')!r} (this code has {SCHEME!r})")
        low, high = description["ngram_range"]
        return cls((int(low), int(high)), int(description["buckets"]))

    def features(self, texts: Sequence[str]) -> SparseRows:
        """One sparse row of width `buckets` per text."""
        if isinstance(texts, str):
            raise TypeError("features() takes a sequence of texts, not one string")
        texts = list(texts)
        parts = [self._block(texts[i : i + _BLOCK]) for i in range(0, len(texts), _BLOCK)]
        return SparseRows.concatenate(parts, self.buckets)

    def _block(self, texts: list[str]) -> SparseRows:
        padded = [f" {normalize_text(text, lowercase=True)} " for text in texts]
        lengths = np.fromiter(map(len, padded), np.int64, len(padded))
        # Little-endian UTF-32 gives one fixed-width code point per character on every platform;
        # surrogatepass keeps a lone surrogate (possible in a Python str) from raising.
        codes = np.frombuffer("".join(padded).encode("utf-32-le", "surrogatepass"), "<u4")
        row_of = np.repeat(np.arange(len(padded)), lengths)
        low, high = self.ngram_range
        hashes, rows = [], []
        h = np.full(len(codes), _SEED, np.uint32)
        for n in range(1, high + 1):
            # Polynomial hash modulo 2**32 (uint32 arithmetic wraps): h[p] covers codes[p : p + n].
            count = len(codes) - n + 1
            if count <= 0:
                break
            h = h[:count] * _PRIME + codes[n - 1 :]
            if n < low:
                continue
            if len(texts) == 1:
                hashes.append(h)
                rows.append(row_of[:count])
            else:
                whole = row_of[:count] == row_of[n - 1 :]  # the n-gram lies within one text
                hashes.append(h[whole])
                rows.append(row_of[:count][whole])
        mixed = _fmix32(np.concatenate(hashes)) if hashes else np.zeros(0, np.uint32)
        row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        bucket = (mixed & _LOW31) % self.buckets
        sign = np.where(mixed >> _BIT31, np.float32(-1), np.float32(1))

        # Signed counts per (text, bucket): sort the keys, sum the signs of each run of equal keys.
        keys = row * self.buckets + bucket
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        starts = np.flatnonzero(np.diff(keys, prepend=-1))  # keys are >= 0
        counts = np.add.reduceat(sign[order], starts) if len(starts) else np.zeros(0, np.float32)
        keys = keys[starts]
        kept = counts != 0  # n-grams of opposite signs that cancelled out
        keys, counts = keys[kept], counts[kept]
        values = np.sign(counts) * np.log1p(np.abs(counts))
        row, column = keys // self.buckets, keys % self.buckets
        norms = np.sqrt(np.bincount(row, weights=values * values, minlength=len(texts)))
        values = values / norms[row]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=len(texts)))])
        return SparseRows(indptr.astype(np.int64), column, values.astype(np.float32), self.buckets)


@dataclass(frozen=True)
class NgramHead:
    """Softmax regression on `NgramFeaturizer` vectors: probabilities = softmax(x @ W + b)."""

    needs_embeddings: ClassVar[bool] = False  # it scores texts: see HeadArtifact.predict_proba

    featurizer: NgramFeaturizer
    weights: np.ndarray  # float32 [buckets, classes]
    bias: np.ndarray  # float32 [classes]

    def __post_init__(self) -> None:
        if self.weights.ndim != 2 or self.bias.shape != (self.weights.shape[1],):
            raise ValueError(f"weight {self.weights.shape} and bias {self.bias.shape} do not fit")
        if self.weights.shape[0] != self.featurizer.buckets:
            raise ValueError(f"{self.weights.shape[0]} weight rows for {self.featurizer.buckets} buckets")

    @property
    def num_classes(self) -> int:
        return self.weights.shape[1]

    def logits(self, features: SparseRows) -> np.ndarray:
        return sparse_dot(features, self.weights) + self.bias

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [n, classes] for n texts (raw: normalisation is part of the features)."""
        return softmax(self.logits(self.featurizer.features(texts))).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for an .npz file: W, b."""
        return {"W": self.weights, "b": self.bias}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], featurizer: NgramFeaturizer) -> NgramHead:
        if set(arrays) != {"W", "b"}:
            raise ValueError(f"unexpected arrays {sorted(arrays)}")
        return cls(featurizer, np.asarray(arrays["W"], np.float32), np.asarray(arrays["b"], np.float32))
