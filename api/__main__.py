"""Command line of the router.

python -m api serve          # gunicorn with api/gunicorn_conf.py (settings from the environment)
python -m api migrate        # apply the inference-database migrations to DATABASE_URL
python -m api settings       # every setting, its variable, default and meaning
"""

from __future__ import annotations

import argparse
import os
import sys

from api.settings import RouterSettings, router_settings
from embedder.settings import describe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description="The HTTP classification router.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the router under gunicorn")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("settings", help="list the router settings")
    args = parser.parse_args(argv)
    try:
        settings = router_settings()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        os.execv(gunicorn, [gunicorn, "-c", os.path.join(ROOT, "api", "gunicorn_conf.py"), "api.app:create_app()"])
    if args.command == "migrate":
        from api.migrations import apply_migrations

        applied = apply_migrations(settings.database_url)
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        return 0
    for var, default, doc in describe(RouterSettings, "API_"):
        print(f"{var}={default}\n    {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
