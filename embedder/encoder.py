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


class TokenInputEncoder:
    """A SavedModel from embedder/convert.py: Python tokenisation, graph encoder."""

    def __init__(self, loaded, info: EncoderInfo):
        from tokenizers import Tokenizer

        self._fn = loaded.signatures["embed_tokens"]
        tokenizer = Tokenizer.from_file(_asset_path(loaded.tokenizer_file))
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0, pad_token="[PAD]")
        self._tokenizer = tokenizer
        self.info = info

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int32)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int32)
        return ids, mask

    def embed(self, texts: list[str]) -> np.ndarray:
        tf, _ = import_tensorflow()
        if not texts:
            return np.zeros((0, self.info.dim), np.float32)
        ids, mask = self.tokenize(texts)
        out = self._fn(input_ids=tf.constant(ids), attention_mask=tf.constant(mask))
        return out["embeddings"].numpy()


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


def load_encoder(handle: str, *, name: str = "", version: str = "") -> SentenceEncoder:
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
        encoder: SentenceEncoder = TokenInputEncoder(loaded, info)
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
