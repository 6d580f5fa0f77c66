"""Command line for classifier heads.

    python -m heads train --config CONFIG.yaml [--store DIR] [--promote | --no-promote]
    python -m heads train --name NAME --train TRAIN.csv [--validation VAL.csv] [--test TEST.csv] [--store DIR]
    python -m heads list [--store DIR]
    python -m heads show MODEL [VERSION] [--store DIR]
    python -m heads promote MODEL VERSION [--store DIR]

`train` prints progress bars on stderr and the evaluation as one JSON object on the last line
of stdout. --store defaults to the MODEL_STORE environment variable, else var/models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from heads.config import ConfigError, load_config, parse_config
from heads.errors import HeadsError

DEFAULT_STORE = "var/models"


def _config_from_args(args: argparse.Namespace):
    if args.config:
        config = load_config(args.config)
        overrides = {k: v for k, v in (("name", args.name),) if v}
        if overrides or args.train or args.validation or args.test:
            raise ConfigError("give either --config or --name/--train/--validation/--test, not both")
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
    artifact = store.load(args.model, args.version)
    manifest = artifact.manifest
    print(
        json.dumps(
            {
                "model": artifact.model,
                "version": artifact.version,
                "path": str(artifact.path),
                "labels": list(artifact.labels),
                "decision": manifest["decision"],
                "embedder": manifest["embedder"],
                "metrics": manifest["metrics"],
                "data": manifest["data"],
                "code_version": manifest["code_version"],
            },
            indent=2,
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=os.environ.get("MODEL_STORE", DEFAULT_STORE), help="model store folder")
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
    prom = sub.add_parser("promote", parents=[common], help="make a version the serving one")
    prom.add_argument("model")
    prom.add_argument("version")
    args = parser.parse_args(argv)

    from heads.registry import ModelStore

    store = ModelStore(args.store)
    try:
        if args.command == "train":
            return _train(args, store)
        if args.command == "list":
            return _list(store)
        if args.command == "show":
            return _show(args, store)
        if args.command == "promote":
            state = store.set_serving(args.model, args.version, reason="promoted from the command line")
            print(json.dumps({"model": args.model, "serving": state.primary}))
            return 0
    except HeadsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
