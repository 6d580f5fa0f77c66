"""Quality of heads trained with the default config on public intent datasets.

    .venv/bin/python loadtests/bench_heads.py [--seeds 13 14 15]

Trains one head per dataset and seed through the same pipeline as `python -m heads train`
(default config, embeddings cached under var/cache/embeddings), evaluates on the test split and
prints the median over seeds. CLINC150 is compared with the published frozen-encoder MLP point
(Larson et al. 2019: 93.5% in-scope accuracy, 47.4% out-of-scope recall). The last line of
output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from heads.config import parse_config  # noqa: E402
from heads.embedding import LocalEmbedder  # noqa: E402
from heads.pipeline import train_head  # noqa: E402
from heads.registry import ModelStore  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
DATASETS = {
    "clinc150": {"train": "clinc150/train.csv", "validation": "clinc150/validation.csv", "test": "clinc150/test.csv"},
    "clinc150_imbalanced": {
        "train": "clinc150/variants/data_imbalanced/train.csv",
        "validation": "clinc150/variants/data_imbalanced/validation.csv",
        "test": "clinc150/variants/data_imbalanced/test.csv",
    },
    "snips": {"train": "snips/train.csv", "test": "snips/test.csv"},  # no validation: 10% stratified split
}
REPORTED = ("in_scope_accuracy", "oos_recall", "accuracy", "weighted_f1", "macro_f1", "training_seconds", "threshold")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = parser.parse_args()

    embedder = LocalEmbedder(str(ROOT / "var" / "embedders" / "minilm-l6-v2"))
    summary: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-heads-") as tmp:
        store = ModelStore(Path(tmp) / "models")
        for name in args.datasets:
            runs = []
            for seed in args.seeds:
                data = {split: str(DATA / path) for split, path in DATASETS[name].items()}
                config = parse_config({"name": name.replace("_", "-"), "data": data, "training": {"seed": seed}})
                result = train_head(
                    config, store=store, cache_dir=ROOT / "var" / "cache" / "embeddings", embedder=embedder
                )
                runs.append(result)
                shown = {k: result[k] for k in REPORTED if k in result}
                print(f"{name} seed {seed}: {json.dumps(shown)}", flush=True)
            summary[name] = {
                "seeds": args.seeds,
                "n_train": runs[0]["n_train"],
                "n_test": runs[0]["n_test"],
                **{k: round(statistics.median(r[k] for r in runs), 4) for k in REPORTED if k in runs[0]},
            }
    embedder.close()
    if "clinc150" in summary:
        summary["clinc150"]["published_mlp_in_scope_accuracy"] = 0.935
        summary["clinc150"]["published_mlp_oos_recall"] = 0.474
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
