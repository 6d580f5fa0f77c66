"""The sentence-transformers baseline of bench_embedder.py: phrases/s of all-MiniLM-L6-v2 on torch (CPU).

    var/bench-st-venv/bin/python loadtests/st_baseline.py --model DIR --phrases FILE [--threads N]
        [--vectors-out FILE.npy]

Runs in its own venv (env/bench-st.txt, `make var/bench-st-venv/.installed`), never beside TensorFlow:
bench_embedder.py starts it as a subprocess. It imports nothing from this repository. --phrases is JSON,
{"batches": {"1": [[texts], ...], "8": [...], ...}, "check": [texts]}: the caller picks the batches, so
both engines see the same phrases in the same batches. After a warm-up, each batch size's batches go
through `model.encode` (normalized, numpy, under torch.inference_mode), one call per batch, and the whole
list is timed. Prints one JSON line: phrases/s per batch size and the median latency of the batch-1 calls.
--offline-batch N also times one `model.encode(all texts, batch_size=N)`: sentence-transformers' own
best case, which sorts the whole list by length before batching (what an offline job gets; a server
answering requests cannot). --vectors-out saves the normalized vectors of the "check" texts (float32 .npy) for the caller to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# Local model folder only: never reach for the Hugging Face Hub; no "Loading weights" bar on stderr.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import sentence_transformers  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

DIMENSION = 384
MAX_SEQ_LENGTH = 256


def load_model(model_dir: str) -> SentenceTransformer:
    """The model, checked: 384-dimensional output, texts truncated at 256 tokens."""
    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()
    if model.get_embedding_dimension() != DIMENSION:
        raise SystemExit(f"{model_dir}: dimension {model.get_embedding_dimension()}, expected {DIMENSION}")
    if model.max_seq_length != MAX_SEQ_LENGTH:
        raise SystemExit(f"{model_dir}: max_seq_length {model.max_seq_length}, expected {MAX_SEQ_LENGTH}")
    tokens = model.preprocess(["word " * 1000])["input_ids"].shape[1]
    if tokens != MAX_SEQ_LENGTH:
        raise SystemExit(f"{model_dir}: a 1,000-word text gave {tokens} tokens, expected {MAX_SEQ_LENGTH}")
    return model


def encode(model: SentenceTransformer, texts: list[str], batch_size: int = 0) -> np.ndarray:
    with torch.inference_mode():
        return model.encode(
            texts,
            batch_size=batch_size or len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


def run_batches(model: SentenceTransformer, batches: list[list[str]]) -> tuple[float, list[float]]:
    """(phrases/s over the whole list, per-call latency in ms)."""
    latencies = []
    started = time.perf_counter()
    for batch in batches:
        call_started = time.perf_counter()
        vectors = encode(model, batch)
        latencies.append((time.perf_counter() - call_started) * 1000)
        if vectors.shape != (len(batch), DIMENSION):
            raise SystemExit(f"encode gave shape {vectors.shape} for a batch of {len(batch)}")
    elapsed = time.perf_counter() - started
    return sum(len(batch) for batch in batches) / elapsed, latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a local sentence-transformers model folder")
    parser.add_argument("--phrases", required=True, help='JSON: {"batches": {"1": [[...], ...]}, "check": [...]}')
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--offline-batch", type=int, default=0, help="also time encode(all texts, batch_size=N)")
    parser.add_argument("--vectors-out", help="a .npy file for the normalized vectors of the check texts")
    args = parser.parse_args(argv)
    with open(args.phrases, encoding="utf-8") as f:
        phrases = json.load(f)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)

    sizes = sorted(phrases["batches"], key=int)
    for size in sizes:  # warm-up: each batch shape once
        for batch in phrases["batches"][size][:2]:
            encode(model, batch)
    per_s, single_ms = {}, []
    for size in sizes:
        rate, latencies = run_batches(model, phrases["batches"][size])
        per_s[size] = round(rate, 1)
        if int(size) == 1:
            single_ms = latencies

    offline = None
    if args.offline_batch:
        everything = [t for size in sizes for batch in phrases["batches"][size] for t in batch]
        started = time.perf_counter()
        encode(model, everything, args.offline_batch)
        offline = round(len(everything) / (time.perf_counter() - started), 1)

    if args.vectors_out:
        check = phrases.get("check", [])
        vectors = encode(model, check) if check else np.zeros((0, DIMENSION))
        np.save(args.vectors_out, vectors.astype(np.float32))
    result = {
        "engine": "sentence-transformers",
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "threads": torch.get_num_threads(),
        "max_seq_length": model.max_seq_length,
        "phrases_per_s": per_s,
        "single_p50_ms": round(statistics.median(single_ms), 2) if single_ms else None,
        "offline_phrases_per_s": offline,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
