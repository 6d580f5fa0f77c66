"""What one router process spends loading every head of a large store: the part of a router's
start that grows with the number of heads, without gunicorn, PostgreSQL or the embedder.

    make bench-head-loading                      # after make bench-scale built its 10,000-head store
    .venv/bin/python loadtests/bench_head_loading.py --store var/bench-scale/stores/n1000 --rounds 5

Each round builds a new TenantHeads on the store (as a router worker does at start) and times
its first refresh (every tenant's models listed, every serving state read, every serving version
loaded: manifest parsed, files listed, weights mapped) and then the check of every weights
checksum that a first load leaves for later (heads/weights_check.py; a router does it before
each head's first answer and in the background after ready). `known`: with the record of weights
this host has already verified (heads/known_checksums.py), filled by a refresh before the
rounds, so no weights are hashed: a worker restarted, or the second worker of a router. With
--hash, also `hashed`: each round with a new, empty record, so that every weights file is hashed
(a router's first start on a host; on a store larger than the page cache, mostly disk reads).

Prints the CPU's vector flags, the seconds of each round and their median; the last line of
output is one JSON object.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.core.tenant_heads import TenantHeads  # noqa: E402
from heads.known_checksums import KnownChecksums  # noqa: E402
from loadtests.bench_batching import cpu_flags  # noqa: E402

DEFAULT_STORE = ROOT / "var" / "bench-scale" / "stores" / "n10000"


def load_seconds(store: Path, record: Path) -> tuple[float, int]:
    """(seconds for a new TenantHeads' first refresh of `store` and the check of every head's
    weights, models serving after them)."""
    heads = TenantHeads(store, known_checksums=KnownChecksums(record))
    started = time.perf_counter()
    reports = heads.refresh()
    heads.check_weights()
    elapsed = time.perf_counter() - started
    failed = {t: r.failed for t, r in reports.items() if r.failed} or heads.errors
    if failed:
        raise SystemExit(f"models failed to load: {str(failed)[:500]}")
    return elapsed, heads.count()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="a MODEL_STORE (tenant folders)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hash", action="store_true", help="also rounds that hash every weights file")
    args = parser.parse_args(argv)
    if not args.store.is_dir():
        raise SystemExit(f"{args.store} does not exist: `make bench-scale` builds it (or pass --store)")

    flags = cpu_flags()
    print(f"cpu flags: {' '.join(flags) or 'none of the vector flags'}; {os.cpu_count()} cores", flush=True)
    results: dict = {"cpu_flags": flags, "cores": os.cpu_count(), "store": str(args.store)}
    with tempfile.TemporaryDirectory(prefix="bench-head-loading-") as tmp:
        known = Path(tmp) / "known"
        _, models = load_seconds(args.store, known)  # fills the record (and the page cache)
        results["models"] = models
        kinds = ["known"] + (["hashed"] if args.hash else [])
        rounds: dict[str, list[float]] = {kind: [] for kind in kinds}
        for i in range(args.rounds):
            for kind in kinds:
                record = known if kind == "known" else Path(tmp) / f"empty-{i}"
                seconds, _ = load_seconds(args.store, record)
                rounds[kind].append(seconds)
                print(f"round {i + 1}, {kind}: {models} models in {seconds:.1f} s", flush=True)
    for kind, seconds in rounds.items():
        results[f"{kind}_s"] = [round(s, 4) for s in seconds]
        results[f"median_{kind}_s"] = round(statistics.median(seconds), 4)
        results[f"median_{kind}_ms_per_model"] = round(statistics.median(seconds) / results["models"] * 1e3, 3)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
