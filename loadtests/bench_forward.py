"""A head's forward pass with its weights stored row-major against column-major (Fortran) order.

    make bench-forward
    .venv/bin/python loadtests/bench_forward.py [--heads 256] [--rounds 7]

Heads shaped like the default one (layers-4-6 features: 1,152 inputs, one hidden layer of 256,
151 classes, float32) are written as a router reads them (`head.npz`, mapped in place by
heads/mapped_weights.py), once with each layer's matrix in row-major order (how versions were
written before) and once in column-major order (`DenseHead.arrays` now). Then the numpy forward
pass, per call:

- cold: each call scores a different head, cycling through --heads of them (256 heads are 300 MB
  of weights, far beyond the CPU's caches): a router with many heads, where nearly every answer
  reads its head's weights from memory;
- warm: every call scores the same head (a router with a few busy models).

Batch sizes 1 (a single text, the common request) and 8. The two orders run interleaved in each
round; each figure is the median of --rounds rounds and the ratio is taken within each round.
Prints the CPU's vector flags and, last, one JSON object.
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

from heads.mapped_weights import load_weights, save_weights  # noqa: E402
from heads.network import DenseHead  # noqa: E402
from loadtests.bench_batching import cpu_flags  # noqa: E402

SHAPE = (1152, 256, 151)


def random_head(rng: np.random.Generator) -> DenseHead:
    sizes = list(zip(SHAPE[:-1], SHAPE[1:]))
    weights = tuple((rng.standard_normal(size) / np.sqrt(size[0])).astype(np.float32) for size in sizes)
    biases = tuple(rng.standard_normal(size[1]).astype(np.float32) for size in sizes)
    return DenseHead(weights, biases, "relu")


def written_and_mapped(head: DenseHead, path: Path, column_major: bool) -> tuple[DenseHead, object]:
    """The head as a router holds it: read in place from its file (the map kept alive by the caller)."""
    arrays = head.arrays() if column_major else {k: np.ascontiguousarray(v) for k, v in head.arrays().items()}
    path.write_bytes(save_weights(arrays))
    mapped_arrays, mapped = load_weights(path)
    assert mapped is not None, "the weights were not mapped"
    return DenseHead.from_arrays(mapped_arrays, head.activation), mapped


def us_per_call(heads: list[DenseHead], x: np.ndarray, calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        heads[i % len(heads)].probabilities(x)
    return (time.perf_counter() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2048, help="calls per figure")
    args = parser.parse_args(argv)

    flags = cpu_flags()
    print(f"cpu flags: {' '.join(flags) or 'none of the vector flags'}; {os.cpu_count()} cores", flush=True)
    rng = np.random.default_rng(13)
    with tempfile.TemporaryDirectory(prefix="bench-forward-") as tmp:
        orders = {"row_major": [], "column_major": []}
        maps = []
        for i in range(args.heads):
            head = random_head(rng)
            for order, kept in orders.items():
                served, mapped = written_and_mapped(head, Path(tmp) / f"{order}-{i}.npz", order == "column_major")
                kept.append(served)
                maps.append(mapped)
        x1 = rng.standard_normal((1, SHAPE[0])).astype(np.float32)
        probe = orders["row_major"][0].probabilities(x1), orders["column_major"][0].probabilities(x1)
        np.testing.assert_allclose(probe[0], probe[1], rtol=1e-5, atol=1e-6)
        for heads in orders.values():  # every page mapped in before anything is timed
            us_per_call(heads, x1, len(heads))

        results = {}
        for batch in (1, 8):
            x = rng.standard_normal((batch, SHAPE[0])).astype(np.float32)
            figures = {(order, case): [] for order in orders for case in ("cold", "warm")}
            for _ in range(args.rounds):
                for order, heads in orders.items():
                    figures[(order, "cold")].append(us_per_call(heads, x, args.calls))
                    figures[(order, "warm")].append(us_per_call(heads[:1], x, args.calls))
            for case in ("cold", "warm"):
                row = figures[("row_major", case)]
                column = figures[("column_major", case)]
                results[f"batch_{batch}_{case}"] = {
                    "row_major_us": round(statistics.median(row), 1),
                    "column_major_us": round(statistics.median(column), 1),
                    "column_over_row": round(statistics.median(c / r for c, r in zip(column, row)), 3),
                }
                print(f"batch {batch}, {case}: {results[f'batch_{batch}_{case}']}", flush=True)
        del orders, maps
    print(json.dumps({"cpu_flags": flags, "cores": os.cpu_count(), "heads": args.heads, "shape": SHAPE, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
