"""The import graph follows the architecture (docs/architecture.md):

- inferencedb/ (the database) imports neither api nor heads, except heads' name rules;
- heads/ (training, artifacts, the store) never imports api;
- api/ reaches the database only through inferencedb, and of heads only what serving needs
  (the store, artifacts, the numpy forward pass), never training or reporting code;
- api/core (the serving core) knows nothing of Flask or api/web;
- no product package imports the development tools, the tests or the load tests; no image
  copies devtools/.

Every import counts, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PRODUCT = ("embedder", "heads", "inferencedb", "api")
HEADS_FOR_SERVING = {
    "heads",  # `from heads import serving_state`: checked by name below
    "heads.names",
    "heads.layout",
    "heads.errors",
    "heads.registry",
    "heads.generation",
    "heads.artifact",
    "heads.mapped_weights",
    "heads.known_checksums",  # the weights a host verified, read by the loader above
    "heads.weights_check",  # the weights' checksum at first need
    "heads.manifest",
    "heads.serving_state",
    "heads.rollback_guard",  # the automatic rollback's policy and verdict (api/core/auto_rollback.py)
    "heads.decisions",  # the release decisions it records
    "heads.gated_promotion",  # the gated promote of POST /v1/models/<model>/serving, and its parts:
    "heads.release_gate",
    "heads.paired_evidence",
    "heads.release_history",  # decisions and serving history in the report
    "heads.decision",
    "heads.network",
    "heads.ngram",
}
DATABASE_DRIVERS = ("psycopg2", "psycopg")


def imports_of(source: str) -> set[str]:
    """Every module a source imports, as dotted names (`from a import b` gives a and a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(module: str, imported: set[str]) -> list[str]:
    """The rules above for one module (dotted name) and what it imports."""
    wrong: list[str] = []
    refused: list[str] = []

    def refuse(name: str, why: str) -> None:
        refused.append(name)
        wrong.append(f"{module} imports {name}: {why}")

    for name in sorted(imported):  # a module sorts before the names imported from it: report it once
        if any(within(name, earlier) for earlier in refused):
            continue
        if within(module, "inferencedb"):
            if within(name, "api"):
                refuse(name, "the database package must not depend on the router")
            elif within(name, "heads") and not (name == "heads" or within(name, "heads.names")):
                refuse(name, "the database package uses only heads' name rules")
        if within(module, "heads") and within(name, "api"):
            refuse(name, "heads must not depend on the router")
        if within(module, "api"):
            if within(name, "heads") and not _heads_for_serving(name):
                refuse(name, "the router may use the store and the forward pass, not training or reports")
            if any(within(name, driver) for driver in DATABASE_DRIVERS):
                refuse(name, "the router reaches the database only through inferencedb")
        if within(module, "api.core") and (within(name, "flask") or within(name, "api.web")):
            refuse(name, "the serving core is transport-free")
        if within(module, "heads") and module != "heads.data" and any(within(name, d) for d in DATABASE_DRIVERS):
            refuse(name, "heads reaches the inference database through inferencedb")
        if any(within(module, p) for p in PRODUCT) and any(
            within(name, other) for other in ("devtools", "tests", "loadtests")
        ):
            refuse(name, "product code must not depend on development tools")
    return wrong


def _heads_for_serving(name: str) -> bool:
    """A module of HEADS_FOR_SERVING, or a name imported from one (heads.registry.ModelStore)."""
    parent = name.rpartition(".")[0]
    return name in HEADS_FOR_SERVING or (parent in HEADS_FOR_SERVING and parent != "heads")


def product_modules() -> list[tuple[str, Path]]:
    modules = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "proto" in path.relative_to(ROOT).parts:
                continue
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules.append((dotted.removesuffix(".__init__"), path))
    return modules


@pytest.mark.parametrize(("module", "path"), product_modules(), ids=lambda value: str(value))
def test_imports_follow_the_architecture(module, path):
    assert violations(module, imports_of(path.read_text())) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("heads.pipeline", "from api.core.runtime import Runtime", "heads must not depend on the router"),
        ("inferencedb.keys", "def f():\n    from api.errors import ApiError", "must not depend on the router"),
        ("inferencedb.monitoring_report", "from heads.registry import ModelStore", "only heads' name rules"),
        ("api.web.routes_models", "import heads.pipeline", "not training or reports"),
        ("api.core.monitoring", "from heads import monitoring_report_files", "not training or reports"),
        ("api.core.predictor", "import psycopg2", "only through inferencedb"),
        ("api.core.predictor", "from flask import request", "transport-free"),
        ("heads.pipeline", "import psycopg2.extras", "through inferencedb"),
        ("embedder.serve", "from devtools.processes import free_port", "development tools"),
    ],
)
def test_the_rules_catch_each_kind_of_violation(module, source, expected):
    found = violations(module, imports_of(source))
    assert len(found) == 1 and expected in found[0], found


def test_allowed_imports_pass():
    allowed = "from heads.registry import ModelStore\nfrom heads import serving_state\nfrom inferencedb import pg"
    assert violations("api.core.runtime", imports_of(allowed)) == []
    assert violations("inferencedb.keys", imports_of("from heads.names import check_tenant_name")) == []


def test_no_image_ships_the_development_tools():
    for dockerfile in sorted((ROOT / "env" / "docker").glob("*.Dockerfile")):
        instructions = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not any("devtools" in line for line in instructions), dockerfile.name
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text()
        assert "!devtools" not in ignore and "!tests" not in ignore and "!loadtests" not in ignore, dockerfile.name
