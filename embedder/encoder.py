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
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from embedder.call_plan import DEFAULT_MAX_BATCH_TOKENS, plan_calls
from embedder.convert import SIGNATURES
from embedder.model_runner import ModelRunner

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


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def configure_threads(lanes: int, threads_per_lane: int = 0) -> tuple[int, int]:
    """Size TensorFlow's thread pools for `lanes` model calls at once, each on `threads_per_lane`
    intra-op threads (0: the cores shared out among the lanes). Must run before TensorFlow runs
    its first op; later it is logged and ignored. Returns (lanes, threads_per_lane)."""
    tf, _ = import_tensorflow()
    lanes = max(1, lanes or available_cores())
    threads = threads_per_lane or max(1, available_cores() // lanes)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(lanes)
    except RuntimeError as exc:
        log.warning("TensorFlow threads already fixed, %d lanes keep them: %s", lanes, exc)
    return lanes, threads


def cpu_flags() -> set[str]:
    """The instruction-set flags of this machine's CPU (empty where /proc/cpuinfo is absent)."""
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(line.split(":", 1)[1].split())


def cpu_has_bf16() -> bool:
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    version: str
    dim: int
    lowercase: bool
    max_seq_length: int  # 0 when the model does not say
    layers: int = 0  # encoder layers whose pools `embed_layers` returns (0: only the sentence embedding)

    def __post_init__(self):
        if "#" in self.name or "#" in self.version:
            raise ValueError(
                f"model name and version may not hold '#' (it separates an embedding id's features): {self}"
            )

    @property
    def model_id(self) -> str:
        """Identifies the vectors a model produces: heads and cache keys are bound to it."""
        return f"{self.name}@{self.version}"


class SentenceEncoder(Protocol):
    info: EncoderInfo

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), info.dim]."""

    def embed_layers(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), info.layers * info.dim]: every layer's pool, in layer order (the
        last block is what `embed` returns); only where info.layers > 0."""

    def warm_up(self) -> None:
        """Do once, before serving, what would otherwise slow the first requests."""


class TokenInputEncoder:
    """A SavedModel from embedder/convert.py: Python tokenisation, graph encoder.

    A batch is not padded to its longest text: `plan_calls` cuts it into model calls of texts of
    similar length, each padded only to its own longest (the padding is most of the compute with
    real traffic's spread of lengths). The calls of one batch run on `lanes` threads at once,
    each call on the intra-op threads TensorFlow was configured with (`configure_threads`), and
    each by the cheapest function ready for its shape (`ModelRunner`). `embed` may be called from
    several threads at once; at most `lanes` model calls run at any moment."""

    def __init__(
        self,
        loaded,
        info: EncoderInfo,
        *,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        lanes: int = 1,
        xla_max_tokens: int = 0,
        precision: str = "fp32",
    ):
        from tokenizers import Tokenizer

        self._loaded = loaded  # owns the variables: a function traced later needs them alive
        self._fn = loaded.signatures[SIGNATURES["fp32"]]
        graph = None
        if precision != "fp32":
            if SIGNATURES.get(precision) not in loaded.signatures:
                raise ValueError(
                    f"this model has no {precision} signature (it has {sorted(loaded.signatures)}); "
                    "rebuild it with `make setup`, or use precision fp32"
                )
            if precision == "bf16" and not cpu_has_bf16():
                log.warning("this CPU has neither AMX nor AVX512-BF16: bf16 calls are emulated and slower than fp32")
            graph = loaded.signatures[SIGNATURES[precision]]
        self.precision = precision
        tokenizer = Tokenizer.from_file(_asset_path(loaded.tokenizer_file))
        tokenizer.no_padding()  # each call pads to its own longest, below
        self._pad_id = tokenizer.token_to_id("[PAD]") or 0
        self._tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.lanes = max(1, lanes)
        # Every call returns every layer's pool where the model has them (embedder/features.py):
        # computing them is a few masked sums, and requests for different features share a batch.
        output = "layer_embeddings" if info.layers else "embeddings"
        self._width = info.dim * max(1, info.layers)
        self.runner = ModelRunner(self._fn, xla_max_tokens=xla_max_tokens, graph_signature=graph, output=output)
        self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="model-lane") if self.lanes > 1 else None
        # Batches of several callers may run at once (the service's batcher has a worker per lane):
        # at most `lanes` model calls run at any moment, whichever thread makes them.
        self._lane = threading.BoundedSemaphore(self.lanes)
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

    def warm_up(self) -> None:
        """Trace the graph, and start compiling the XLA shapes in the background, shortest first
        (the shapes of single phrases, which most requests hold)."""
        self.embed(["warm up the graph"])
        self.runner.prepare(self.runner.shapes())

    def close(self, timeout: float | None = 60.0) -> bool:
        """Stop background compilation (waiting for the one under way) and the lanes."""
        stopped = self.runner.close(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        return stopped

    def embed(self, texts: list[str]) -> np.ndarray:
        out = self._embed_calls(texts)
        return np.ascontiguousarray(out[:, -self.info.dim :]) if self.info.layers else out

    def embed_layers(self, texts: list[str]) -> np.ndarray:
        if not self.info.layers:
            raise ValueError(f"{self.info.model_id} serves only its sentence embedding")
        return self._embed_calls(texts)

    def _embed_calls(self, texts: list[str]) -> np.ndarray:
        """The model's output for `texts` ([n, self._width]), through the planned calls."""
        if not texts:
            return np.zeros((0, self._width), np.float32)
        token_ids = [e.ids for e in self._tokenizer.encode_batch(texts)]
        out = np.empty((len(texts), self._width), dtype=np.float32)
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
        # Up to two single-text calls per lane, where each runs a compiled function (call_plan.py):
        # as graph calls (before their shapes are compiled, or where a compilation failed) they
        # would cost more than one call holding them all.
        few = len(texts) <= 2 * self.lanes
        singles = len(texts) if few and all(map(self.runner.compiled_for, set(lengths.tolist()))) else 0
        calls = plan_calls(lengths, max_tokens=self.max_batch_tokens, min_calls=self.lanes, singles_up_to=singles)

        def run(call: np.ndarray) -> None:
            padded = self._padded([token_ids[i] for i in call])
            with self._lane:
                out[call] = self.runner.run(*padded)

        if self._pool is None or len(calls) == 1:
            for call in calls:
                run(call)
        else:
            # The costliest calls first, so the lanes finish together.
            calls.sort(key=lambda c: -len(c) * int(lengths[c].max()))
            for future in [self._pool.submit(run, call) for call in calls]:
                future.result()
        return out


class StringInputEncoder:
    """A SavedModel callable on a batch of strings (e.g. Universal Sentence Encoder)."""

    def __init__(self, loaded, info: EncoderInfo):
        self._model = loaded
        self.info = info

    def warm_up(self) -> None:
        self.embed(["warm up the graph"])

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
    handle: str,
    *,
    name: str = "",
    version: str = "",
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    lanes: int = 1,
    xla_max_tokens: int = 0,
    precision: str = "fp32",
) -> SentenceEncoder:
    """Load a sentence encoder with tensorflow_hub from a folder or a TF Hub handle. A token-input
    model runs its calls on `lanes` threads, calls of a single text of at most `xla_max_tokens`
    padded tokens XLA-compiled (0, the default here: never; the service turns it on, see
    EMBEDDER_XLA_MAX_TOKENS), and calls of several texts in `precision` ("fp32" or "bf16")."""
    _, hub = import_tensorflow()

    if os.path.isdir(handle) and not Path(handle, "saved_model.pb").is_file():
        raise FileNotFoundError(f"{handle} is a folder without saved_model.pb: not a SavedModel")
    if "://" not in handle and not os.path.exists(handle):
        hint = " (run `make setup` to build the default model)" if "var/embedders" in handle else ""
        raise FileNotFoundError(f"embedding model not found at {handle}{hint}")
    loaded = hub.load(handle)
    if hasattr(loaded, "metadata_file") and SIGNATURES["fp32"] in getattr(loaded, "signatures", {}):
        meta = json.loads(Path(_asset_path(loaded.metadata_file)).read_text())
        info = EncoderInfo(
            name=name or meta["name"],
            version=version or meta["version"],
            dim=int(meta["dim"]),
            lowercase=bool(meta["lowercase"]),
            max_seq_length=int(meta.get("max_seq_length", 0)),
            layers=int(meta.get("layers", 0)) if "layer_embeddings" in meta.get("outputs", ()) else 0,
        )
        encoder: SentenceEncoder = TokenInputEncoder(
            loaded,
            info,
            max_batch_tokens=max_batch_tokens,
            lanes=lanes,
            xla_max_tokens=xla_max_tokens,
            precision=precision,
        )
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
        if precision != "fp32":
            raise ValueError(f"{handle} takes strings: only precision fp32 is available for it")
        encoder = StringInputEncoder(loaded, info)
    log.info("loaded %s (dim %d) from %s", encoder.info.model_id, encoder.info.dim, handle)
    return encoder
