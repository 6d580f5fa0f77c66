"""Benchmark of the embedding service: cache-miss throughput against sentence-transformers, the
single-phrase miss latency, and the phrase cache.

    make bench-embedder          # or: .venv/bin/python loadtests/bench_embedder.py [--repeats 3]

In one run:
1. Cache-miss throughput at batch sizes 1, 8, 32, 128, on never-seen texts with the length spread
   of real traffic (loadtests/phrases.py `traffic_mix`: dataset utterances, some joined into
   messages, a few long ones up to and past the 256-token limit). The same texts, cut into the
   same batches, go to four engines: the bare model in this process (as the service runs it:
   length-aware calls on its lanes), a real `python -m embedder serve` process through gRPC with
   one client (sequential) and with 4 clients at once (concurrent), and sentence-transformers on
   torch in its own process and environment (loadtests/st_baseline.py, env/bench-st.txt: torch
   and TensorFlow never share a process). The servers run with the phrase cache off, so every
   text is a miss; the XLA shapes are compiled (and waited for) before anything is timed. A
   third server runs the bf16 mode (EMBEDDER_PRECISION=bf16), through gRPC with one and with 4
   clients; its vectors are compared with the float32 server's (`cosine_bf16_to_fp32_min`).
   The bf16 mode's effect on a head's accuracy is measured by loadtests/bench_precision.py.
   The float32 server's PSS is read once its XLA shapes are compiled and again after the
   throughput runs (`server_pss_mib`).
2. The single-phrase cache miss through gRPC: p50 and p99 of one-text RPCs, one at a time.
3. Agreement: cosine between the service's vectors and sentence-transformers' on the same texts.
4. Cache-hit latency per RPC (one cached phrase per request), p50 and p99.
5. A repetitive workload: rounds of requests of --texts-per-request phrases drawn from a Zipf
   distribution over --vocabulary real phrases, sent by --concurrency clients to two servers
   that differ only in the phrase cache (EMBEDDER_CACHE_SIZE default vs 0; both still merge
   duplicates inside a request and across concurrent requests). The same rounds run twice on the
   cache-on server: first while its cache meets the vocabulary for the first time (transient),
   then after every vocabulary phrase has been seen once (steady state, the `cache_speedup`).
   The speedup is about 1 / (1 - hit rate) until the hit path itself is the limit, so each
   speedup is printed with the hit rate it was measured at.
Throughputs are medians over --repeats runs, ratios are taken within each run and then their
median. Prints the CPU's vector flags; the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.embedder_process import EmbedderProcess  # noqa: E402
from embedder.client import EmbedderClient  # noqa: E402
from loadtests.bench_batching import cpu_flags  # noqa: E402
from loadtests.phrases import ZipfSampler, real_phrases, traffic_mix  # noqa: E402
from loadtests.procfs import process_memory  # noqa: E402

BATCH_SIZES = (1, 8, 32, 128)
# Texts per batch size and repeat: enough for a few seconds of work at each size.
PHRASES_PER_SIZE = {1: 240, 8: 640, 32: 1280, 128: 1536}
CONCURRENT_CLIENTS = 4
ST_PYTHON = ROOT / "var" / "bench-st-venv" / "bin" / "python"
# Both engines also embed each repeat's texts as one list (an offline job): sentence-transformers
# sorts the list by length and batches it by this many; the service's encoder plans its calls.
OFFLINE_BATCH = 32
ENGINES = (
    "bare",
    "grpc_sequential",
    "grpc_concurrent",
    "bf16_grpc_sequential",
    "bf16_grpc_concurrent",
    "sentence_transformers",
)


def send_all(call, requests: list[list[str]], clients: int = 1) -> float:
    """Seconds for `clients` threads to pass every request to `call`, each taking the next."""
    pending = iter(requests)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                request = next(pending, None)
            if request is None:
                return
            call(request)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def pss_mib(pid: int) -> float | None:
    """The PSS of a process in MiB (None when it cannot be read)."""
    memory = process_memory(pid)
    return None if memory is None else memory.mib()["pss_mib"]


def phrases_per_s(call, batches: list[list[str]], clients: int = 1) -> float:
    """Texts per second of `call` over `batches`, sent by `clients` threads at once."""
    return sum(map(len, batches)) / send_all(call, batches, clients)


def sentence_transformers(
    batches: dict[int, list[list[str]]], check: list[str], model_dir: Path
) -> tuple[dict, np.ndarray]:
    """sentence-transformers on the same batches, in the bench environment's own process:
    (its JSON summary, its vectors of `check`)."""
    if not ST_PYTHON.is_file():
        raise SystemExit(f"{ST_PYTHON} is missing: run `make bench-embedder`, which builds the bench environment")
    with tempfile.TemporaryDirectory() as tmp:
        phrases, vectors = Path(tmp, "phrases.json"), Path(tmp, "vectors.npy")
        phrases.write_text(json.dumps({"batches": {str(b): v for b, v in batches.items()}, "check": check}))
        done = subprocess.run(
            [
                str(ST_PYTHON),
                str(ROOT / "loadtests" / "st_baseline.py"),
                "--model",
                str(model_dir),
                "--phrases",
                str(phrases),
                "--vectors-out",
                str(vectors),
                "--offline-batch",
                str(OFFLINE_BATCH),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"sentence-transformers baseline failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1]), np.load(vectors)


def run_concurrently(client: EmbedderClient, requests: list[list[str]], concurrency: int) -> tuple[float, float]:
    """(seconds for all requests, share of texts that were cache hits)."""
    hits = []

    def embed(texts: list[str]) -> None:
        hits.append(int(client.embed(texts, timeout=120).cache_hits.sum()))  # list.append is atomic

    seconds = send_all(embed, requests, concurrency)
    return seconds, sum(hits) / max(sum(map(len, requests)), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single-rpcs", type=int, default=300, help="one-text RPCs for the miss latency")
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of the repetitive workload")
    parser.add_argument("--vocabulary", type=int, default=10_000, help="distinct phrases the workload draws from")
    parser.add_argument("--texts-per-request", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--round-requests", type=int, default=200, help="requests per measured round")
    parser.add_argument("--hit-rpcs", type=int, default=2000, help="single-phrase RPCs for the cache-hit latency")
    args = parser.parse_args()

    from embedder.convert import wheel_model_dir
    from embedder.encoder import configure_threads, load_encoder
    from embedder.settings import embedder_settings

    settings = embedder_settings()
    mix = traffic_mix()
    per_repeat = sum(PHRASES_PER_SIZE.values())
    needed = args.repeats * per_repeat + args.single_rpcs
    if len(mix) < needed:
        raise SystemExit(f"only {len(mix)} texts; lower --repeats or --single-rpcs")
    miss_texts, single_texts = mix[: args.repeats * per_repeat], mix[args.repeats * per_repeat : needed]
    vocabulary = real_phrases()[: args.vocabulary]
    in_vocabulary = set(vocabulary)
    hit_texts = [t for t in mix[needed:] if t not in in_vocabulary][: args.hit_rpcs]
    flags = cpu_flags()
    words = np.array([len(t.split()) for t in miss_texts])
    print(f"cpu flags: {' '.join(flags) or 'none of the vector flags'}; {os.cpu_count()} cores", flush=True)
    print(
        f"texts: {len(miss_texts)} for throughput, {words.mean():.1f} words on average, "
        f"p50 {np.percentile(words, 50):.0f}, p99 {np.percentile(words, 99):.0f}, max {words.max()}",
        flush=True,
    )

    lanes, _ = configure_threads(settings.lanes, settings.tf_threads)
    bare = load_encoder(
        settings.model, max_batch_tokens=settings.max_batch_tokens, lanes=lanes, xla_max_tokens=settings.xla_max_tokens
    )
    bare.warm_up()
    bare.runner.wait_compiled()
    xla_shapes = len(bare.runner.compiled_shapes)
    log_dir = ROOT / "var" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    common = {"EMBEDDER_METRICS_PORT": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    runs: dict[str, dict[int, list[float]]] = {e: {b: [] for b in BATCH_SIZES} for e in ENGINES}
    st_info: dict = {}
    offline: dict[str, list[float]] = {"bare": [], "sentence_transformers": []}
    with (
        EmbedderProcess(common, log_path=log_dir / "bench-embedder-cache-on.log") as cached,
        EmbedderProcess(
            {**common, "EMBEDDER_CACHE_SIZE": "0"}, log_path=log_dir / "bench-embedder-cache-off.log"
        ) as uncached,
        EmbedderProcess(
            {**common, "EMBEDDER_CACHE_SIZE": "0", "EMBEDDER_PRECISION": "bf16"},
            log_path=log_dir / "bench-embedder-bf16.log",
        ) as reduced,
    ):
        for server in (cached, uncached, reduced):
            server.wait_compiled()
        server_pss_mib = {"compiled": pss_mib(uncached.proc.pid)}
        client_on = EmbedderClient(cached.address, timeout_s=120)
        client_off = EmbedderClient(uncached.address, timeout_s=120)
        client_bf16 = EmbedderClient(reduced.address, timeout_s=120)
        for client in (client_on, client_off, client_bf16):
            client.embed(["warm up the connection"])

        offset = 0
        for repeat in range(args.repeats):
            batches = {}
            for b in BATCH_SIZES:
                chunk = miss_texts[offset : offset + PHRASES_PER_SIZE[b]]
                offset += PHRASES_PER_SIZE[b]
                batches[b] = [chunk[i : i + b] for i in range(0, len(chunk), b)]
                runs["bare"][b].append(phrases_per_s(bare.embed, batches[b]))
                runs["grpc_sequential"][b].append(phrases_per_s(client_off.embed, batches[b]))
                runs["grpc_concurrent"][b].append(phrases_per_s(client_off.embed, batches[b], CONCURRENT_CLIENTS))
                runs["bf16_grpc_sequential"][b].append(phrases_per_s(client_bf16.embed, batches[b]))
                runs["bf16_grpc_concurrent"][b].append(phrases_per_s(client_bf16.embed, batches[b], CONCURRENT_CLIENTS))
            everything = [t for b in BATCH_SIZES for batch in batches[b] for t in batch]
            started = time.perf_counter()
            bare.embed(everything)
            offline["bare"].append(len(everything) / (time.perf_counter() - started))
            check = [t for b in BATCH_SIZES for t in batches[b][0]]
            st_info, st_vectors = sentence_transformers(batches, check, wheel_model_dir())
            for b in BATCH_SIZES:
                runs["sentence_transformers"][b].append(float(st_info["phrases_per_s"][str(b)]))
            offline["sentence_transformers"].append(float(st_info["offline_phrases_per_s"]))
            for b in BATCH_SIZES:
                print(
                    f"repeat {repeat + 1} batch {b:>3}: "
                    + ", ".join(f"{e} {runs[e][b][-1]:6.0f}" for e in ENGINES)
                    + " phrases/s",
                    flush=True,
                )
        server_pss_mib["after_throughput"] = pss_mib(uncached.proc.pid)
        ours = client_off.embed(check).vectors
        cosine = (ours * st_vectors).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(st_vectors, axis=1)
        cosine_bf16 = (client_bf16.embed(check).vectors * ours).sum(axis=1)

        single_latencies = []
        for text in single_texts:
            started = time.perf_counter()
            client_off.embed([text])
            single_latencies.append(time.perf_counter() - started)

        client_on.embed_all(hit_texts, chunk_size=64)
        latencies = []
        for text in hit_texts:
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
        for name, phase_runs in (("transient", transient), ("steady", steady)):
            for i, ((seconds, hit_rate), seconds_off) in enumerate(zip(phase_runs, off_s)):
                print(
                    f"round {i + 1} {name:>9}: cache on {n_round / seconds:7.0f} phrases/s (hit rate {hit_rate:.3f}), "
                    f"cache off {n_round / seconds_off:5.0f} phrases/s, speedup {seconds_off / seconds:5.1f}x",
                    flush=True,
                )

    def phase(phase_runs):
        return {
            "hit_rate": round(statistics.median(h for _, h in phase_runs), 4),
            "phrases_per_s": round(n_round / statistics.median(s for s, _ in phase_runs), 1),
            "speedup": round(statistics.median(off / on for (on, _), off in zip(phase_runs, off_s)), 2),
        }

    def median(engine: str, b: int) -> float:
        return round(statistics.median(runs[engine][b]), 1)

    def best_ratio(engine: str) -> float:
        """Per repeat: this engine's best batch size against sentence-transformers' best."""
        return round(
            statistics.median(
                max(runs[engine][b][r] for b in BATCH_SIZES)
                / max(runs["sentence_transformers"][b][r] for b in BATCH_SIZES)
                for r in range(args.repeats)
            ),
            2,
        )

    transient_summary, steady_summary = phase(transient), phase(steady)
    summary = {
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "lanes": lanes,
        "xla_shapes": xla_shapes,
        "repeats": args.repeats,
        "mean_words": round(float(words.mean()), 1),
        "sentence_transformers": {k: st_info.get(k) for k in ("torch", "sentence_transformers", "threads")},
        "phrases_per_s": {e: {str(b): median(e, b) for b in BATCH_SIZES} for e in ENGINES},
        "grpc_sequential_best_vs_st_best": best_ratio("grpc_sequential"),
        "grpc_concurrent_best_vs_st_best": best_ratio("grpc_concurrent"),
        "bare_best_vs_st_best": best_ratio("bare"),
        "bf16_grpc_sequential_best_vs_st_best": best_ratio("bf16_grpc_sequential"),
        "bf16_grpc_concurrent_best_vs_st_best": best_ratio("bf16_grpc_concurrent"),
        "bf16_vs_fp32_grpc_concurrent_best": round(
            statistics.median(
                max(runs["bf16_grpc_concurrent"][b][r] for b in BATCH_SIZES)
                / max(runs["grpc_concurrent"][b][r] for b in BATCH_SIZES)
                for r in range(args.repeats)
            ),
            2,
        ),
        "offline_one_list_phrases_per_s": {e: round(statistics.median(v), 1) for e, v in offline.items()},
        "offline_bare_vs_st": round(
            statistics.median(a / b for a, b in zip(offline["bare"], offline["sentence_transformers"])), 2
        ),
        "cosine_to_st_min": round(float(cosine.min()), 6),
        "cosine_bf16_to_fp32_min": round(float(cosine_bf16.min()), 6),
        "server_pss_mib": server_pss_mib,
        "single_miss_rpc_p50_ms": round(float(np.percentile(single_latencies, 50)) * 1000, 2),
        "single_miss_rpc_p99_ms": round(float(np.percentile(single_latencies, 99)) * 1000, 2),
        "st_single_p50_ms": st_info.get("single_p50_ms"),
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
    print("\n| engine (phrases/s, cache misses) | " + " | ".join(f"batch {b}" for b in BATCH_SIZES) + " |")
    print("|---|" + "---|" * len(BATCH_SIZES))
    for e in ENGINES:
        print(f"| {e} | " + " | ".join(f"{median(e, b):.0f}" for b in BATCH_SIZES) + " |")
    print(
        f"| offline: one list of all texts | bare {summary['offline_one_list_phrases_per_s']['bare']:.0f} | "
        f"sentence_transformers (sorted, batch {OFFLINE_BATCH}) "
        f"{summary['offline_one_list_phrases_per_s']['sentence_transformers']:.0f} | | |"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
