"""Sentence encoders loaded with `tensorflow_hub.load(handle)`: the only serving module that
imports TensorFlow.

Two kinds of SavedModel are understood:
- token-input models built by `embedder/convert.py`: they carry `tokenizer.json` and
  `encoder.json` as assets and expose an `embed_tokens(input_ids, attention_mask)` signature.
  Tokenisation runs here with the `tokenizers` library, from the tokenizer inside the SavedModel.
- string-input models such as the Universal Sentence Encoder: `model(tf.constant(texts))`
  returns a [n, dim] tensor. Name and version come from settings, or from the handle and a
  fingerprint of its `saved_model.pb`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


def import_tensorflow():
    """TensorFlow and tensorflow_hub, imported quietly (C++ info logs and hub's pkg_resources
    deprecation warning are noise in a service log)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import tensorflow as tf
        import tensorflow_hub as hub
    return tf, hub


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    version: str
    dim: int
    lowercase: bool
    max_seq_length: int  # 0 when the model does not say

    @property
    def model_id(self) -> str:
        """Identifies the vectors a model produces: heads and cache keys are bound to it."""
        return f"{self.name}@{self.version}"


class SentenceEncoder(Protocol):
    info: EncoderInfo

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), info.dim]."""


# What one extra model call costs, in padded tokens: about 12 ms of fixed cost per call against
# about 0.13 ms per padded token on 2 cores (all-MiniLM-L6-v2, measured; the ratio is what counts:
# with 32 instead, real short phrases got 0.8-0.9x, cut into calls that cost more than they saved).
CALL_COST_TOKENS = 96
DEFAULT_MAX_BATCH_TOKENS = 8192


def plan_calls(lengths: np.ndarray, *, max_tokens: int = DEFAULT_MAX_BATCH_TOKENS) -> list[np.ndarray]:
    """The texts of one batch (their token counts) cut into model calls of similar lengths.

    A call pads every text to its longest, so texts are sorted by length and cut where the padding
    saved is worth more than the fixed cost of another call (CALL_COST_TOKENS); no call holds more
    than `max_tokens` padded tokens (one text always fits). The cut is optimal for that cost: a
    dynamic programme over the sorted lengths, O(n^2) for n texts, vectorised over the cut point.
    Returns the indices of each call's texts, shortest call first."""
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(lengths, kind="stable")
    longest = np.asarray(lengths, dtype=np.int64)[order]  # a call of sorted[i:j] pads to longest[j - 1]
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    starts = np.arange(n)
    for j in range(1, n + 1):
        padded = (j - starts[:j]) * longest[j - 1]
        cost = best[:j] + CALL_COST_TOKENS + padded
        cost[padded > max_tokens] = np.inf
        cost[j - 1] = best[j - 1] + CALL_COST_TOKENS + longest[j - 1]  # a text alone always fits
        cut[j] = int(np.argmin(cost))
        best[j] = cost[cut[j]]
    calls, j = [], n
    while j > 0:
        calls.append(order[cut[j] : j])
        j = int(cut[j])
    return calls[::-1]


class TokenInputEncoder:
    """A SavedModel from embedder/convert.py: Python tokenisation, graph encoder.

    A batch is not padded to its longest text: `plan_calls` cuts it into model calls of texts of
    similar length, each padded only to its own longest (the padding is most of the compute with
    real traffic's spread of lengths)."""

    def __init__(self, loaded, info: EncoderInfo, *, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS):
        from tokenizers import Tokenizer

        self._fn = loaded.signatures["embed_tokens"]
        tokenizer = Tokenizer.from_file(_asset_path(loaded.tokenizer_file))
        tokenizer.no_padding()  # each call pads to its own longest, below
        self._pad_id = tokenizer.token_to_id("[PAD]") or 0
        self._tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.info = info

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """ids and attention mask of `texts`, padded to the longest: one call's inputs."""
        return self._padded([e.ids for e in self._tokenizer.encode_batch(texts)])

    def _padded(self, token_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(ids) for ids in token_ids)
        ids = np.full((len(token_ids), width), self._pad_id, dtype=np.int32)
        mask = np.zeros((len(token_ids), width), dtype=np.int32)
        for row, tokens in enumerate(token_ids):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask

    def embed(self, texts: list[str]) -> np.ndarray:
        tf, _ = import_tensorflow()
        if not texts:
            return np.zeros((0, self.info.dim), np.float32)
        token_ids = [e.ids for e in self._tokenizer.encode_batch(texts)]
        out = np.empty((len(texts), self.info.dim), dtype=np.float32)
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
        for call in plan_calls(lengths, max_tokens=self.max_batch_tokens):
            ids, mask = self._padded([token_ids[i] for i in call])
            out[call] = self._fn(input_ids=tf.constant(ids), attention_mask=tf.constant(mask))["embeddings"].numpy()
        return out


class StringInputEncoder:
    """A SavedModel callable on a batch of strings (e.g. Universal Sentence Encoder)."""

    def __init__(self, loaded, info: EncoderInfo):
        self._model = loaded
        self.info = info

    def embed(self, texts: list[str]) -> np.ndarray:
        tf, _ = import_tensorflow()
        if not texts:
            return np.zeros((0, self.info.dim), np.float32)
        return np.asarray(self._model(tf.constant(texts)), dtype=np.float32)


def _asset_path(asset) -> str:
    path = asset.asset_path.numpy()
    return path.decode() if isinstance(path, bytes) else str(path)


def _fingerprint(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        if (model_dir / name).is_file():
            digest.update((model_dir / name).read_bytes())
    return digest.hexdigest()[:12]


def load_encoder(
    handle: str, *, name: str = "", version: str = "", max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
) -> SentenceEncoder:
    """Load a sentence encoder with tensorflow_hub from a folder or a TF Hub handle."""
    _, hub = import_tensorflow()

    if os.path.isdir(handle) and not Path(handle, "saved_model.pb").is_file():
        raise FileNotFoundError(f"{handle} is a folder without saved_model.pb: not a SavedModel")
    if "://" not in handle and not os.path.exists(handle):
        hint = " (run `make setup` to build the default model)" if "var/embedders" in handle else ""
        raise FileNotFoundError(f"embedding model not found at {handle}{hint}")
    loaded = hub.load(handle)
    if hasattr(loaded, "metadata_file") and "embed_tokens" in getattr(loaded, "signatures", {}):
        meta = json.loads(Path(_asset_path(loaded.metadata_file)).read_text())
        info = EncoderInfo(
            name=name or meta["name"],
            version=version or meta["version"],
            dim=int(meta["dim"]),
            lowercase=bool(meta["lowercase"]),
            max_seq_length=int(meta.get("max_seq_length", 0)),
        )
        encoder: SentenceEncoder = TokenInputEncoder(loaded, info, max_batch_tokens=max_batch_tokens)
    else:
        resolved = Path(hub.resolve(handle))
        probe = StringInputEncoder(loaded, EncoderInfo("probe", "0", 0, False, 0))
        dim = int(probe.embed(["probe"]).shape[1])
        info = EncoderInfo(
            name=name or resolved.name,
            version=version or _fingerprint(resolved),
            dim=dim,
            lowercase=False,
            max_seq_length=0,
        )
        encoder = StringInputEncoder(loaded, info)
    log.info("loaded %s (dim %d) from %s", encoder.info.model_id, encoder.info.dim, handle)
    return encoder
