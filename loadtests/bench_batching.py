"""Length-aware model calls against one call padded to the batch's longest text (the bare model).

    .venv/bin/python loadtests/bench_batching.py [--repeats 3]

On the same never-seen real phrases (CLINC150 and SNIPS, 1-40 words, shuffled: the length spread
of real traffic), at batch sizes 8, 32, 64 and 128: phrases/s of the encoder as the service runs
it (`TokenInputEncoder.embed`: the batch cut by `plan_calls` into calls of similar length) and of
one call padded to the longest text (what it did before). The two run interleaved, each figure
is the median of --repeats runs, and the ratio is taken within each run. Prints the CPU's
vector flags and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedder.encoder import load_encoder  # noqa: E402
from embedder.settings import embedder_settings  # noqa: E402
from loadtests.phrases import real_phrases  # noqa: E402

BATCH_SIZES = (8, 32, 64, 128)
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> list[str]:
    """The vector flags among this CPU's (the embedder reads the same list for its XLA cache)."""
    from embedder.encoder import cpu_flags as all_flags

    flags = all_flags()
    return [flag for flag in VECTOR_FLAGS if flag in flags]


def phrases_per_s(call, phrases: list[str], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(phrases), batch):
        call(phrases[i : i + batch])
    return len(phrases) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phrases", type=int, default=768, help="phrases per batch size and repeat")
    args = parser.parse_args(argv)
    encoder = load_encoder(embedder_settings().model)
    encoder.embed(["warm up"])

    def one_call(texts: list[str]):
        ids, mask = encoder.tokenize(texts)
        return encoder._fn(input_ids=ids, attention_mask=mask)["embeddings"].numpy()

    pool = real_phrases(1, 40)
    random.Random(0).shuffle(pool)
    print(f"cpu flags: {' '.join(cpu_flags()) or 'none of ' + ', '.join(VECTOR_FLAGS)}", flush=True)
    print(f"{len(pool)} phrases, max_batch_tokens {encoder.max_batch_tokens}", flush=True)
    results = {}
    cursor = 0
    for batch in BATCH_SIZES:
        planned, padded, ratios = [], [], []
        for _ in range(args.repeats):
            # the same phrases for both (the bare model has no cache), other phrases each repeat
            phrases = pool[cursor : cursor + args.phrases]
            cursor = (cursor + args.phrases) % max(1, len(pool) - args.phrases)
            planned.append(phrases_per_s(encoder.embed, phrases, batch))
            padded.append(phrases_per_s(one_call, phrases, batch))
            ratios.append(planned[-1] / padded[-1])
        results[batch] = {
            "planned_calls": round(statistics.median(planned), 1),
            "one_padded_call": round(statistics.median(padded), 1),
            "ratio": round(statistics.median(ratios), 2),
        }
        print(f"batch {batch:>3}: {results[batch]}", flush=True)
    print(json.dumps({"cpu_flags": cpu_flags(), "phrases_per_s": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
