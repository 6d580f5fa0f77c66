"""Command line of the router.

python -m api serve          # gunicorn with api/web/gunicorn_conf.py (settings from the environment)
python -m api migrate [--wait-s S]   # apply the inference-database migrations to DATABASE_URL
python -m api settings       # every setting, its variable, default and meaning
"""

from __future__ import annotations

import argparse
import os
import sys

from api.core.settings import describe, router_settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _admin(args: argparse.Namespace, dsn: str) -> int:
    import json

    from heads.errors import HeadsError
    from inferencedb import keys
    from inferencedb.errors import InferenceDbError
    from inferencedb.migrations import apply_migrations

    try:
        apply_migrations(dsn)
        if args.command == "tenants":
            keys.set_limits(dsn, args.tenant, rate_rps=args.rps, burst=args.burst)
            print(json.dumps({"tenant": args.tenant, "rate_rps": args.rps, "burst": args.burst}))
        elif args.action == "create":
            key = keys.create_key(dsn, tenant=None if args.operator else args.tenant, description=args.description)
            print(key)  # shown once: only its hash is stored
        elif args.action == "list":
            print(json.dumps(keys.list_keys(dsn), indent=2))
        elif not keys.revoke_key(dsn, args.key_id):
            print(f"error: no active key {args.key_id!r}", file=sys.stderr)
            return 2
    except (InferenceDbError, HeadsError) as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return 2
    return 0


def _migrate(dsn: str, wait_s: float) -> int:
    import time

    from inferencedb.errors import DatabaseUnavailable, InferenceDbError
    from inferencedb.migrations import apply_migrations

    deadline = time.monotonic() + wait_s
    while True:
        try:
            applied = apply_migrations(dsn)
            break
        except DatabaseUnavailable as exc:
            if time.monotonic() >= deadline:
                print(f"error: {exc.message}", file=sys.stderr)
                return 2
            print(f"waiting for PostgreSQL: {exc.message.splitlines()[0]}", file=sys.stderr, flush=True)
            time.sleep(1.0)
        except InferenceDbError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description="The HTTP classification router.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the router under gunicorn")
    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument(
        "--wait-s",
        type=float,
        default=0.0,
        help="keep retrying while PostgreSQL cannot be reached, for up to this many seconds (a start-up job)",
    )
    sub.add_parser("settings", help="list the router settings")
    keys = sub.add_parser("keys", help="create, list and revoke API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create")
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant")
    who.add_argument("--operator", action="store_true")
    create.add_argument("--description", default="")
    keys.add_parser("list")
    revoke = keys.add_parser("revoke")
    revoke.add_argument("key_id")
    tenants = sub.add_parser("tenants", help="tenant rate limits").add_subparsers(dest="action", required=True)
    limit = tenants.add_parser("limit")
    limit.add_argument("tenant")
    limit.add_argument("--rps", type=float, required=True)
    limit.add_argument("--burst", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        settings = router_settings()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        os.execv(
            gunicorn, [gunicorn, "-c", os.path.join(ROOT, "api", "web", "gunicorn_conf.py"), "api.web.app:create_app()"]
        )
    if args.command in ("keys", "tenants"):
        return _admin(args, settings.database_url)
    if args.command == "migrate":
        return _migrate(settings.database_url, args.wait_s)
    for var, default, doc in describe():
        print(f"{var}={default}\n    {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
