"""What the bf16 mode (EMBEDDER_PRECISION=bf16) costs in quality, and what it gains in speed.

    make bench-precision          # or: .venv/bin/python loadtests/bench_precision.py [--seeds 13 14 15]

Trains the CLINC150 head with the default config on float32 embeddings, as a user does, then
serves its test split twice: with the vectors of the float32 embedder and with those of the bf16
embedder (the same service core, in this process, in requests of --request-texts texts). Reports
the in-scope accuracy and out-of-scope recall of both and their difference (the target: within
0.3 points), the cosine of every bf16 vector to its float32 vector, and the phrases/s of both
embedders on the test split (cache off, medians of --repeats passes, ratio per pass). Prints the
CPU's vector flags; the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heads.config import parse_config  # noqa: E402
from heads.embedding import LocalEmbedder  # noqa: E402
from heads.metrics import summary  # noqa: E402
from heads.pipeline import load_splits, train_head  # noqa: E402
from heads.registry import ModelStore  # noqa: E402
from loadtests.bench_batching import cpu_flags  # noqa: E402
from loadtests.bench_heads import DATA, DATASETS  # noqa: E402

MODEL = ROOT / "var" / "embedders" / "minilm-l6-v2"
PRECISIONS = ("fp32", "bf16")


def embed_in_requests(service, texts: list[str], size: int) -> tuple[np.ndarray, float]:
    """(vectors, seconds) for `texts` sent to the service core `size` at a time."""
    started = time.perf_counter()
    vectors = np.concatenate([service.embed(texts[i : i + size]).vectors for i in range(0, len(texts), size)])
    return vectors, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--request-texts", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from embedder.serve import build_service
    from embedder.settings import embedder_settings

    flags = cpu_flags()
    print(f"cpu flags: {' '.join(flags) or 'none of the vector flags'}; {os.cpu_count()} cores", flush=True)
    data = {split: str(DATA / path) for split, path in DATASETS["clinc150"].items()}
    config = parse_config({"name": "clinc150", "data": data})
    test = load_splits(config).test
    services = {
        p: build_service(embedder_settings(model=str(MODEL), precision=p, cache_size=0, metrics_port=-1))
        for p in PRECISIONS
    }
    for service in services.values():
        runner = getattr(service._encoder, "runner", None)
        if runner is not None:
            runner.wait_compiled()

    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for p in PRECISIONS:
            vectors[p], took = embed_in_requests(services[p], test.texts, args.request_texts)
            seconds[p].append(took)
    for service in services.values():
        service.close()
    cosine = (vectors["fp32"] * vectors["bf16"]).sum(axis=1)

    embedder = LocalEmbedder(str(MODEL))
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        store = ModelStore(Path(tmp) / "models")
        for seed in args.seeds:
            seeded = parse_config({"name": "clinc150", "data": data, "training": {"seed": seed}})
            trained = train_head(
                seeded, store=store, cache_dir=ROOT / "var" / "cache" / "embeddings", embedder=embedder
            )
            artifact = store.load("clinc150", trained["version"])
            labels = list(artifact.labels)
            truth = np.array([labels.index(label) for label in test.labels])
            scores = {}
            for p in PRECISIONS:
                predicted, _ = artifact.rule.decide(artifact.predict_proba(vectors[p]))
                scores[p] = summary(truth, predicted, labels, artifact.rule.reject_label)
            runs.append(scores)
            print(
                f"seed {seed}: "
                + ", ".join(
                    f"{p} in-scope {scores[p]['in_scope_accuracy']:.4f} oos recall {scores[p]['oos_recall']:.4f}"
                    for p in PRECISIONS
                ),
                flush=True,
            )
    embedder.close()

    def median_of(p: str, key: str) -> float:
        return round(statistics.median(r[p][key] for r in runs), 4)

    def median_change(key: str) -> float:
        return round(statistics.median((r["bf16"][key] - r["fp32"][key]) * 100 for r in runs), 2)

    result = {
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "texts": len(test.texts),
        "request_texts": args.request_texts,
        "seeds": args.seeds,
        "phrases_per_s": {p: round(len(test.texts) / statistics.median(seconds[p]), 1) for p in PRECISIONS},
        "bf16_vs_fp32_speed": round(statistics.median(f / b for f, b in zip(seconds["fp32"], seconds["bf16"])), 2),
        "cosine_bf16_to_fp32": {
            "min": round(float(cosine.min()), 6),
            "p01": round(float(np.percentile(cosine, 1)), 6),
            "mean": round(float(cosine.mean()), 6),
        },
        "in_scope_accuracy": {p: median_of(p, "in_scope_accuracy") for p in PRECISIONS},
        "oos_recall": {p: median_of(p, "oos_recall") for p in PRECISIONS},
        "in_scope_accuracy_change_points": median_change("in_scope_accuracy"),
        "oos_recall_change_points": median_change("oos_recall"),
        "largest_in_scope_change_points": round(
            max(abs(r["bf16"]["in_scope_accuracy"] - r["fp32"]["in_scope_accuracy"]) * 100 for r in runs), 2
        ),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
