"""Command line for classifier heads.

    python -m heads train --config CONFIG.yaml [--store DIR] [--promote | --no-promote]
    python -m heads train --name NAME --train TRAIN.csv [--validation VAL.csv] [--test TEST.csv] [--store DIR]
    python -m heads list [--store DIR]
    python -m heads show MODEL [VERSION] [--store DIR]

Serving state (routers pick changes up without a restart; every change is recorded):
    python -m heads status MODEL                          # primary, shadows, A/B, fallback, history
    python -m heads promote MODEL VERSION                 # VERSION answers all traffic
    python -m heads promote MODEL VERSION --if-better [--margin M] [--min-items N] [--database-url URL]
                                                          # only if the evidence says it is not worse
                                                          # (heads/gated_promotion.py); refused: exit 1
    python -m heads shadow MODEL VERSION [--fraction F]   # score F of requests, never answer
    python -m heads shadow MODEL VERSION --remove
    python -m heads ab MODEL VERSION --percent P [--key client_id|request_id]
    python -m heads ab MODEL --off
    python -m heads fallback MODEL VERSION | --off        # answers when the primary cannot
    python -m heads rollback MODEL                        # back to the state before the last change
    python -m heads guard MODEL --window 10m [--max-error-rate R] [--max-reject-rate R]
                      [--min-agreement A] [--min-items N]  # automatic rollback of the next promotions
    python -m heads guard MODEL --off

Monitoring (volume, labels, confidence, feedback accuracy, shadow agreement, drift):
    python -m heads report MODEL [--since D] [--until D] [--url http://router:8000] [--out DIR]
    (from DATABASE_URL, or from a router with --url, sending MANYHEADS_API_KEY as the API key; the
    rows of --tenant either way)

`train` prints progress bars on stderr and the evaluation as one JSON object on the last line
of stdout. Models live in <store>/<tenant>/: --store defaults to MODEL_STORE, else var/models,
and --tenant to MANYHEADS_TENANT, else "default".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from heads import serving_state
from heads.config import ConfigError, load_config, parse_config
from heads.errors import HeadsError, RegistryError
from heads.release_gate import DEFAULT_MARGIN, DEFAULT_MIN_ITEMS
from heads.rollback_guard import make_guard, parse_duration

DEFAULT_STORE = "var/models"


def _config_from_args(args: argparse.Namespace):
    if args.config:
        config = load_config(args.config)
        if args.name or args.train or args.validation or args.test:
            raise ConfigError("give either --config or --name/--train/--validation/--test, not both")
        # --embedder and --seed say how to run this training, so they apply to a config too.
        if args.embedder:
            config = dataclasses.replace(config, embedder_address=args.embedder)
        if args.seed is not None:
            config = dataclasses.replace(config, training=dataclasses.replace(config.training, seed=args.seed))
        return config
    if not (args.name and args.train):
        raise ConfigError("train needs --config FILE, or --name NAME and --train FILE")
    data = {"train": args.train}
    if args.validation:
        data["validation"] = args.validation
    if args.test:
        data["test"] = args.test
    raw = {"name": args.name, "data": data}
    if args.embedder:
        raw["embedder_address"] = args.embedder
    if args.seed is not None:
        raw["training"] = {"seed": args.seed}
    return parse_config(raw)


def _train(args: argparse.Namespace, store) -> int:
    from heads.pipeline import train_head

    config = _config_from_args(args)
    result = train_head(config, store=store, cache_dir=Path(args.cache), promote=args.promote)
    print(json.dumps(result))
    return 0


def _list(store) -> int:
    rows = []
    for model in store.models():
        state = store.serving(model)
        rows.append({"model": model, "versions": store.versions(model), "serving": state.primary if state else None})
    print(json.dumps({"store": str(store.root), "models": rows}, indent=2))
    return 0


def _show(args: argparse.Namespace, store) -> int:
    from heads.manifest import embedder_to_dict

    artifact = store.load(args.model, args.version)
    manifest = artifact.manifest
    print(
        json.dumps(
            {
                "model": artifact.model,
                "version": artifact.version,
                "path": str(artifact.path),
                "labels": list(artifact.labels),
                "decision": manifest.decision.to_dict(),
                "embedder": embedder_to_dict(manifest.embedder),
                "metrics": manifest.metrics,
                "data": manifest.data,
                "code_version": manifest.code_version,
            },
            indent=2,
        )
    )
    return 0


def _report(args: argparse.Namespace, store) -> int:
    from heads import monitoring_report_files

    if args.url:
        report = monitoring_report_files.fetch_report(
            args.url,
            args.model,
            args.since,
            args.until,
            tenant=args.tenant,
            api_key=os.environ.get("MANYHEADS_API_KEY") or None,
        )
    else:
        report = monitoring_report_files.compute_report(
            os.environ.get("DATABASE_URL", ""), store, args.model, args.since, args.until, tenant=args.tenant
        )
    # A version not in this store has the baseline {}: charts without the training side.
    baselines = {entry["version"]: store.baseline(args.model, entry["version"]) for entry in report["versions"]}
    page = monitoring_report_files.write_report(report, baselines, Path(args.out or f"var/reports/{args.model}"))
    print(json.dumps({"report": str(page), "versions": len(report["versions"])}))
    return 0


SERVING_COMMANDS = ("status", "promote", "shadow", "ab", "fallback", "rollback", "guard")


def _serving_change(args: argparse.Namespace):
    """(change function, default reason, is_rollback) for a serving command (heads/serving_state.py)."""
    if args.command == "shadow":
        return serving_state.operation(
            "unshadow" if args.remove else "shadow", version=args.version, fraction=args.fraction
        )
    if args.command == "ab":
        if args.off:
            return serving_state.operation("ab_off")
        if not args.version or args.percent is None:
            raise ConfigError("ab needs VERSION and --percent, or --off")
        return serving_state.operation("ab", version=args.version, percent=args.percent, key=args.key)
    if args.command == "fallback":
        if not args.off and not args.version:
            raise ConfigError("fallback needs VERSION or --off")
        return serving_state.operation("fallback_off" if args.off else "fallback", version=args.version)
    if args.command == "guard":
        if args.off:
            return serving_state.operation("guard_off")
        guard = make_guard(
            window_s=parse_duration(args.window),
            max_error_rate=args.max_error_rate,
            max_reject_rate=args.max_reject_rate,
            min_agreement=args.min_agreement,
            min_items=args.min_items,
            shadow_fraction=args.shadow_fraction,
        )
        return serving_state.operation("guard", guard=guard)
    return serving_state.operation(args.command, version=getattr(args, "version", None))


def _gated_promote(args: argparse.Namespace, store) -> int:
    from heads.gated_promotion import promote_if_better
    from heads.release_gate import GatePolicy

    try:
        policy = GatePolicy(
            margin=DEFAULT_MARGIN if args.margin is None else args.margin,
            min_items=DEFAULT_MIN_ITEMS if args.min_items is None else args.min_items,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    database = None
    if args.database_url:
        from inferencedb.database import Database

        database = Database(args.database_url, max_connections=1, timeout_s=30.0)
    from inferencedb.errors import InferenceDbError

    try:
        outcome = promote_if_better(store, args.model, args.version, policy, database=database, note=args.reason)
    except InferenceDbError as exc:
        raise HeadsError(f"{exc.message} (the gate reads shadow and feedback evidence from --database-url)") from None
    finally:
        if database is not None:
            database.close()
    state = outcome.state.to_dict(with_history=False) if outcome.promoted else None
    print(json.dumps({"model": args.model, "decision": outcome.decision, "serving": state}, indent=2))
    if not outcome.promoted:
        print(f"refused: {outcome.decision['reason']}", file=sys.stderr)
        return 1
    return 0


def _serving(args: argparse.Namespace, store) -> int:
    if args.command == "promote" and args.if_better:
        return _gated_promote(args, store)
    if args.command == "promote" and (args.margin is not None or args.min_items is not None):
        raise ConfigError("--margin and --min-items apply to a gated promotion: add --if-better")
    if args.command == "status":
        state = store.serving(args.model)
        if state is None:
            raise RegistryError(f"model {args.model!r} has no serving state")
        print(json.dumps({"model": args.model, **state.to_dict()}, indent=2))
        return 0
    change, reason, is_rollback = _serving_change(args)
    state = store.change_serving(args.model, change, reason=args.reason or reason, rollback=is_rollback)
    print(json.dumps({"model": args.model, **state.to_dict(with_history=False)}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        default=os.environ.get("MODEL_STORE", DEFAULT_STORE),
        help="model store: the folder of the tenants' folders",
    )
    common.add_argument(
        "--tenant", default=os.environ.get("MANYHEADS_TENANT", "default"), help="the tenant owning the model"
    )
    parser = argparse.ArgumentParser(prog="python -m heads", description="Train, inspect and promote classifier heads.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", parents=[common], help="train a new version of a head")
    train.add_argument("--config", help="YAML training config")
    train.add_argument("--name", help="model name (flags-only mode)")
    train.add_argument("--train", help="training data (CSV with text,label columns, or JSONL)")
    train.add_argument("--validation", help="validation data (default: a stratified share of --train)")
    train.add_argument("--test", help="test data for the evaluation report")
    train.add_argument("--embedder", default="", help="gRPC address of a running embedder (default: in-process)")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--cache", default="var/cache/embeddings", help="folder of cached embedding matrices")
    promote = train.add_mutually_exclusive_group()
    promote.add_argument("--promote", dest="promote", action="store_true", default=None, help="serve the new version")
    promote.add_argument("--no-promote", dest="promote", action="store_false", help="never serve it automatically")
    sub.add_parser("list", parents=[common], help="models, versions and the serving version")
    show = sub.add_parser("show", parents=[common], help="a version's labels, decision rule, embedder and metrics")
    show.add_argument("model")
    show.add_argument("version", nargs="?")
    for name, text in (
        ("status", "the serving state of a model"),
        ("rollback", "return to the previous serving state"),
    ):
        cmd = sub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("model")
    prom = sub.add_parser("promote", parents=[common], help="make a version the primary")
    prom.add_argument("model")
    prom.add_argument("version")
    prom.add_argument("--if-better", action="store_true", help="only if the evidence says it is not worse (a gate)")
    prom.add_argument(
        "--margin", type=float, default=None, help=f"accuracy the gate may lose, a fraction ({DEFAULT_MARGIN})"
    )
    prom.add_argument("--min-items", type=int, default=None, help=f"paired items a source needs ({DEFAULT_MIN_ITEMS})")
    prom.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", ""),
        help="inference database for shadow and feedback evidence (default: DATABASE_URL; none: held-out only)",
    )
    shadow = sub.add_parser("shadow", parents=[common], help="add, change or remove a shadow version")
    shadow.add_argument("model")
    shadow.add_argument("version")
    shadow.add_argument("--fraction", type=float, default=1.0, help="share of requests it scores (0-1]")
    shadow.add_argument("--remove", action="store_true")
    ab = sub.add_parser("ab", parents=[common], help="start, change or end an A/B test")
    ab.add_argument("model")
    ab.add_argument("version", nargs="?")
    ab.add_argument("--percent", type=float, default=None, help="share of traffic the candidate answers (0-100)")
    ab.add_argument(
        "--key", default="client_id", choices=serving_state.CANDIDATE_KEYS, help="what keeps a caller on one variant"
    )
    ab.add_argument("--off", action="store_true")
    fallback = sub.add_parser("fallback", parents=[common], help="set or clear the fallback version")
    fallback.add_argument("model")
    fallback.add_argument("version", nargs="?")
    fallback.add_argument("--off", action="store_true")
    guard = sub.add_parser("guard", parents=[common], help="set or clear the automatic rollback of promotions")
    guard.add_argument("model")
    guard.add_argument("--window", default="10m", help="how long a new primary is watched: 90s, 10m, 2h (10m)")
    guard.add_argument("--max-error-rate", type=float, help="roll back above this share of failed items")
    guard.add_argument("--max-reject-rate", type=float, help="roll back above this share of reject-label answers")
    guard.add_argument("--min-agreement", type=float, help="roll back below this agreement with the old primary")
    guard.add_argument("--min-items", type=int, default=50, help="items a figure needs before it counts (50)")
    guard.add_argument("--shadow-fraction", type=float, default=1.0, help="share of requests the old primary scores")
    guard.add_argument("--off", action="store_true")
    for cmd in (prom, shadow, ab, fallback, guard, sub.choices["rollback"]):
        cmd.add_argument("--reason", default="", help="recorded in the history")
    report = sub.add_parser("report", parents=[common], help="monitoring report as HTML with charts")
    report.add_argument("model")
    report.add_argument(
        "--since", help="RFC 3339 date (2026-11-01) or date-time with an offset (default: 24 hours before --until)"
    )
    report.add_argument("--until", help="RFC 3339 date or date-time with an offset, exclusive (default: now)")
    report.add_argument(
        "--url",
        default="",
        help="a running router (sends MANYHEADS_API_KEY as the API key); default: compute from DATABASE_URL",
    )
    report.add_argument("--out", default="", help="output folder (default: var/reports/MODEL)")
    args = parser.parse_args(argv)

    from heads.registry import ModelStore

    try:
        store = ModelStore.for_tenant(args.store, args.tenant)
    except HeadsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "train":
            return _train(args, store)
        if args.command == "list":
            return _list(store)
        if args.command == "show":
            return _show(args, store)
        if args.command in SERVING_COMMANDS:
            return _serving(args, store)
        if args.command == "report":
            return _report(args, store)
    except HeadsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
