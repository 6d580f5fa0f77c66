"""The name rules of the model store: tenants, models and versions are folders, so their names are
restricted to a safe character set that can never reach outside the store. Everything that takes
a name from a user (the router, the CLIs, the key store) checks it here."""

from __future__ import annotations

import re

from heads.errors import RegistryError

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise RegistryError(
            f"invalid model name {name!r}: use 1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


TENANT_NAME = MODEL_NAME  # same safe set: a tenant is a folder of the store, like a model


def check_tenant_name(name: str) -> str:
    if not isinstance(name, str) or not TENANT_NAME.fullmatch(name):
        raise RegistryError(f"invalid tenant name {name!r}: use 1-64 lower-case letters, digits, '-' or '_'")
    return name


def check_version_name(version: str) -> str:
    if not isinstance(version, str) or not VERSION_NAME.fullmatch(version):
        raise RegistryError(f"invalid version {version!r}: use letters, digits, '.', '-' or '_' (at most 64)")
    return version
