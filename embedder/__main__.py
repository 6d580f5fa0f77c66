"""Command line of the embedding service.

    python -m embedder serve                   # gRPC server (settings from EMBEDDER_* variables)
    python -m embedder embed [TEXT ...]        # vectors as JSON from a running server
    python -m embedder embed --local [TEXT ...]  # the same, in-process
    python -m embedder build-model [--out DIR] [--force]
    python -m embedder health [--address A]    # exit 0 when grpc.health.v1 says SERVING (probes)
    python -m embedder settings                # every EMBEDDER_* variable, its default and meaning

Texts for `embed` come from the arguments, or one per line on stdin.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from embedder.errors import EmbedderError
from embedder.features import embedding_id
from embedder.settings import EmbedderSettings, describe, embedder_settings


def _texts(args: argparse.Namespace) -> list[str]:
    if args.texts:
        return args.texts
    return [line.rstrip("\n") for line in sys.stdin if line.strip()]


def _embed(args: argparse.Namespace, settings: EmbedderSettings) -> int:
    texts = _texts(args)
    if args.local:
        from embedder.serve import build_service

        service = build_service(settings)
        try:
            result = service.embed(texts, features=args.features)
        finally:
            service.close()
        model, vectors, hits = embedding_id(service.info.model_id, result.features), result.vectors, result.cache_hits
    else:
        from embedder.client import EmbedderClient

        client = EmbedderClient(args.address or settings.address, timeout_s=args.timeout)
        info = client.info()
        embeddings = client.embed_all(texts, chunk_size=info.max_texts, features=args.features)
        model, vectors, hits = embeddings.model_id, embeddings.vectors, list(embeddings.cache_hits)
    dim = vectors.shape[1]
    print(
        json.dumps({"model": model, "dim": dim, "embeddings": vectors.tolist(), "cache_hits": [bool(h) for h in hits]})
    )
    return 0


def _health(args: argparse.Namespace, settings: EmbedderSettings) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = args.address or settings.address
    try:
        with grpc.insecure_channel(address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"unhealthy: {address}: {exc.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{address}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedder", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the gRPC embedding service")
    embed = sub.add_parser("embed", help="print embeddings of texts as JSON")
    embed.add_argument("texts", nargs="*", help="texts to embed (default: one per line on stdin)")
    embed.add_argument(
        "--local", action="store_true", help="load the model in this process instead of calling a server"
    )
    embed.add_argument("--address", default="", help="server address (default: EMBEDDER_ADDRESS)")
    embed.add_argument("--timeout", type=float, default=30.0, help="seconds per RPC")
    embed.add_argument(
        "--features", default="", help="'sentence' (the default) or pooled layers 'layers-A-B', e.g. layers-4-6"
    )
    build = sub.add_parser("build-model", help="convert the all-MiniLM-L6-v2 wheel into a SavedModel")
    build.add_argument("--out", default="", help="output folder (default: EMBEDDER_MODEL)")
    build.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    health = sub.add_parser("health", help="check a running server with grpc.health.v1 (exit 0 when SERVING)")
    health.add_argument("--address", default="", help="server address (default: EMBEDDER_ADDRESS)")
    health.add_argument("--timeout", type=float, default=3.0)
    sub.add_parser("settings", help="list the EMBEDDER_* settings")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = embedder_settings()
        if args.command == "serve":
            from embedder.serve import serve

            serve(settings)
            # Drained and stopped. A background XLA compilation may still be running, and a Python
            # that finalizes while TensorFlow compiles aborts: end without finalizing.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        elif args.command == "embed":
            return _embed(args, settings)
        elif args.command == "health":
            return _health(args, settings)
        elif args.command == "build-model":
            from embedder.convert import build

            build(Path(args.out or settings.model), force=args.force)
        elif args.command == "settings":
            for var, default, doc in describe():
                print(f"{var}={default}\n    {doc}")
    except (EmbedderError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
