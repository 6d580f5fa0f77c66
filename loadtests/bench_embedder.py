"""Benchmark of the embedding service: gRPC vs the bare model, and the phrase cache.

    make bench-embedder          # or: .venv/bin/python loadtests/bench_embedder.py [--repeats 3]

In one run, on real phrases of 3-12 words (loadtests/phrases.py):
1. Cache-miss throughput at batch sizes 1, 8, 32, 128: the same never-seen phrases sent in
   sequential requests of that size through a real `python -m embedder serve` process, and
   through the bare SavedModel in this process (tokenise + model call, nothing else).
2. Cache-hit latency per RPC (one cached phrase per request), p50 and p99.
3. A repetitive workload: rounds of requests of --texts-per-request phrases drawn from a Zipf
   distribution over --vocabulary real phrases, sent by --concurrency clients to two servers
   that differ only in the phrase cache (EMBEDDER_CACHE_SIZE default vs 0; both still merge
   duplicates inside a request and across concurrent requests). The same rounds run twice on the
   cache-on server: first while its cache meets the vocabulary for the first time (transient),
   then after every vocabulary phrase has been seen once (steady state, the `cache_speedup`).
   The speedup is about 1 / (1 - hit rate) until the hit path itself is the limit, so each
   speedup is printed with the hit rate it was measured at.
Every figure is the median over --repeats runs. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.embedder_process import EmbedderProcess  # noqa: E402
from embedder.client import EmbedderClient  # noqa: E402
from loadtests.phrases import ZipfSampler, real_phrases  # noqa: E402

BATCH_SIZES = (1, 8, 32, 128)
# Phrases per batch size and repeat: enough for a few seconds of work at each size.
PHRASES_PER_SIZE = {1: 300, 8: 800, 32: 1536, 128: 2048}


def phrases_per_s(call, phrases: list[str], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(phrases), batch):
        call(phrases[i : i + batch])
    return len(phrases) / (time.perf_counter() - started)


def run_concurrently(client: EmbedderClient, requests: list[list[str]], concurrency: int) -> tuple[float, float]:
    """(seconds for all requests, share of texts that were cache hits)."""
    hits, total = [0], [0]
    lock = threading.Lock()
    cursor = iter(range(len(requests)))

    def worker():
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            result = client.embed(requests[i], timeout=120)
            with lock:
                hits[0] += int(result.cache_hits.sum())
                total[0] += len(requests[i])

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, hits[0] / max(total[0], 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of the repetitive workload")
    parser.add_argument("--vocabulary", type=int, default=10_000, help="distinct phrases the workload draws from")
    parser.add_argument("--texts-per-request", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--round-requests", type=int, default=200, help="requests per measured round")
    parser.add_argument("--hit-rpcs", type=int, default=2000, help="single-phrase RPCs for the cache-hit latency")
    args = parser.parse_args()

    phrases = real_phrases()
    needed = args.repeats * sum(PHRASES_PER_SIZE.values())
    if len(phrases) < needed + args.vocabulary:
        raise SystemExit(f"only {len(phrases)} phrases; lower --repeats or --vocabulary")
    miss_pool, vocabulary = phrases[:needed], phrases[needed : needed + args.vocabulary]

    from embedder.encoder import load_encoder
    from embedder.settings import embedder_settings

    bare = load_encoder(embedder_settings().model)
    bare.embed(["warm up"])
    log_dir = ROOT / "var" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    common = {"EMBEDDER_METRICS_PORT": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with (
        EmbedderProcess(common, log_path=log_dir / "bench-embedder-cache-on.log") as cached,
        EmbedderProcess(
            {**common, "EMBEDDER_CACHE_SIZE": "0"}, log_path=log_dir / "bench-embedder-cache-off.log"
        ) as uncached,
    ):
        client_on = EmbedderClient(cached.address, timeout_s=120)
        client_off = EmbedderClient(uncached.address, timeout_s=120)
        client_on.embed(["warm up the connection"])
        client_off.embed(["warm up the connection"])

        grpc_runs: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
        bare_runs: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
        offset = 0
        for repeat in range(args.repeats):
            for b in BATCH_SIZES:
                chunk = miss_pool[offset : offset + PHRASES_PER_SIZE[b]]
                offset += PHRASES_PER_SIZE[b]
                grpc_runs[b].append(phrases_per_s(client_on.embed, chunk, b))
                bare_runs[b].append(phrases_per_s(bare.embed, chunk, b))
                print(
                    f"repeat {repeat + 1} batch {b:>3}: grpc {grpc_runs[b][-1]:6.0f} phrases/s, "
                    f"bare {bare_runs[b][-1]:6.0f} phrases/s",
                    flush=True,
                )

        latencies = []
        cached_phrases = miss_pool[: args.hit_rpcs]  # all embedded above, so all cache hits
        for text in cached_phrases:
            started = time.perf_counter()
            result = client_on.embed([text])
            latencies.append(time.perf_counter() - started)
            assert result.cache_hits[0], "expected a cache hit"

        sampler = ZipfSampler(vocabulary, args.zipf, seed=1)
        k = args.texts_per_request
        rounds = [[sampler.draw(k) for _ in range(args.round_requests)] for _ in range(args.repeats)]
        n_round = args.round_requests * k
        off_s = [run_concurrently(client_off, r, args.concurrency)[0] for r in rounds]
        transient = [run_concurrently(client_on, r, args.concurrency) for r in rounds]
        client_on.embed_all(vocabulary, chunk_size=64)  # every vocabulary phrase seen once
        steady = [run_concurrently(client_on, r, args.concurrency) for r in rounds]
        for name, runs in (("transient", transient), ("steady", steady)):
            for i, ((seconds, hit_rate), seconds_off) in enumerate(zip(runs, off_s)):
                print(
                    f"round {i + 1} {name:>9}: cache on {n_round / seconds:7.0f} phrases/s (hit rate {hit_rate:.3f}), "
                    f"cache off {n_round / seconds_off:5.0f} phrases/s, speedup {seconds_off / seconds:5.1f}x",
                    flush=True,
                )

    def phase(runs):
        return {
            "hit_rate": round(statistics.median(h for _, h in runs), 4),
            "phrases_per_s": round(n_round / statistics.median(s for s, _ in runs), 1),
            "speedup": round(statistics.median(off / on for (on, _), off in zip(runs, off_s)), 2),
        }

    transient_summary, steady_summary = phase(transient), phase(steady)
    summary = {
        "cores": os.cpu_count(),
        "repeats": args.repeats,
        **{f"grpc_b{b}_phrases_per_s": round(statistics.median(grpc_runs[b]), 1) for b in BATCH_SIZES},
        **{f"bare_b{b}_phrases_per_s": round(statistics.median(bare_runs[b]), 1) for b in BATCH_SIZES},
        **{
            f"grpc_vs_bare_b{b}": round(statistics.median(g / r for g, r in zip(grpc_runs[b], bare_runs[b])), 3)
            for b in BATCH_SIZES
        },
        "cache_hit_rpc_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 3),
        "cache_hit_rpc_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 3),
        "zipf_exponent": args.zipf,
        "zipf_vocabulary": args.vocabulary,
        "zipf_texts_per_request": k,
        "zipf_concurrency": args.concurrency,
        "cache_off_phrases_per_s": round(n_round / statistics.median(off_s), 1),
        "cache_on_transient_hit_rate": transient_summary["hit_rate"],
        "cache_on_transient_phrases_per_s": transient_summary["phrases_per_s"],
        "cache_speedup_transient": transient_summary["speedup"],
        "cache_on_steady_hit_rate": steady_summary["hit_rate"],
        "cache_on_steady_phrases_per_s": steady_summary["phrases_per_s"],
        "cache_speedup": steady_summary["speedup"],
    }
    print("\nbatch  grpc phrases/s  bare phrases/s  grpc/bare")
    for b in BATCH_SIZES:
        print(
            f"{b:>5}  {summary[f'grpc_b{b}_phrases_per_s']:>14.0f}  {summary[f'bare_b{b}_phrases_per_s']:>14.0f}"
            f"  {summary[f'grpc_vs_bare_b{b}']:>9.3f}"
        )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
