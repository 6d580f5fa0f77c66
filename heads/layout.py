"""The folder layout of the model store: every path below MODEL_STORE is built here.

    <MODEL_STORE>/                       one folder per tenant
        <tenant>/                        the tenant's models: a ModelStore (heads/registry.py)
            <model>/
                serving.json             the serving state (heads/serving_state.py)
                decisions.jsonl          release decisions, append-only (heads/decisions.py)
                .serving.lock            held while the serving state changes
                <version>/               an immutable version (heads/artifact.py)
                    manifest.json        what the version is (heads/manifest.py)
                    head.npz             its weights
            .staging-<model>-XXXXXXXX/   a version being written, renamed to <model>/<version>/

Every name is checked (heads/names.py) before it becomes a path, so no path built here reaches
outside the store. Listings are tolerant of what they cannot examine (see `subfolders`).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

from heads.errors import RegistryError
from heads.names import MODEL_NAME, TENANT_NAME, VERSION_NAME, check_model_name, check_tenant_name, check_version_name

MANIFEST = "manifest.json"
WEIGHTS = "head.npz"
SERVING_FILE = "serving.json"
SERVING_LOCK = ".serving.lock"
STAGING_PREFIX = ".staging-"


def tenant_root(store_root: str | Path, tenant: str) -> Path:
    """The folder of `tenant`'s models in the store rooted at `store_root` (MODEL_STORE)."""
    return Path(store_root) / check_tenant_name(tenant)


def store_root(tenant_folder: str | Path) -> Path:
    """The MODEL_STORE that a tenant's folder belongs to (the inverse of `tenant_root`)."""
    return Path(tenant_folder).parent


def model_dir(tenant_folder: Path, model: str) -> Path:
    return Path(tenant_folder) / check_model_name(model)


def version_dir(tenant_folder: Path, model: str, version: str) -> Path:
    return model_dir(tenant_folder, model) / check_version_name(version)


def manifest_path(version_folder: Path) -> Path:
    return Path(version_folder) / MANIFEST


def serving_path(model_folder: Path) -> Path:
    return Path(model_folder) / SERVING_FILE


def serving_lock_path(model_folder: Path) -> Path:
    return Path(model_folder) / SERVING_LOCK


def new_staging_dir(tenant_folder: Path, model: str) -> Path:
    """A new, empty folder in which a version of `model` is written before it is renamed into
    place: on the same file system as its target, and hidden from every listing (not a valid name)."""
    tenant_folder = Path(tenant_folder)
    tenant_folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{check_model_name(model)}-", dir=tenant_folder))


def tenants(store_root: str | Path) -> list[str]:
    """The tenants of the store (RegistryError when it cannot be listed)."""
    return subfolders(Path(store_root), TENANT_NAME)


def models(tenant_folder: Path) -> list[str]:
    """The model folders of a tenant, with or without versions (RegistryError when it cannot be listed)."""
    return subfolders(Path(tenant_folder), MODEL_NAME)


def versions(model_folder: Path) -> list[str]:
    """The complete versions of a model (those with a manifest), oldest first: version ids sort by
    time. RegistryError when the model's folder cannot be listed."""
    return [v for v in subfolders(model_folder, VERSION_NAME) if _maybe_file(manifest_path(model_folder / v))]


def subfolders(folder: Path, pattern: re.Pattern) -> list[str]:
    """The sorted names of `folder`'s sub-folders that match `pattern`; none when `folder` does not
    exist. An entry that cannot be examined counts as a folder (whoever opens it reports why);
    RegistryError when `folder` itself cannot be listed. One directory read: routers list a
    folder of thousands of models with it, so entries are typed from the listing where the file
    system says (os.scandir), not by a stat each."""
    names = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not pattern.fullmatch(entry.name):
                    continue
                try:
                    is_folder = entry.is_dir()  # False for a dangling link, as for an absent entry
                except OSError:
                    is_folder = True
                if is_folder:
                    names.append(entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise RegistryError(f"{folder}: cannot list it ({exc.strerror or exc})") from None
    return sorted(names)


def maybe_folder(path: Path) -> bool:
    """Whether `path` is a folder; True when it cannot be examined (see `_maybe`)."""
    return _maybe(path, stat.S_ISDIR)


def _maybe_file(path: Path) -> bool:
    return _maybe(path, stat.S_ISREG)


def _maybe(path: Path, is_kind) -> bool:
    """Whether `path` is of that kind; True when it cannot be examined (no permission, an I/O
    error): whoever opens it then reports why, rather than it vanishing from a listing."""
    try:
        return is_kind(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):  # absent, or a dangling link
        return False
    except OSError:
        return True
