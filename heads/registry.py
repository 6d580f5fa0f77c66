"""The model store and its registry: which models exist, their versions, and which one serves.

    <store>/<model>/<version>/     immutable version folders (heads/artifact.py)
    <store>/<model>/serving.json   the serving state: primary, shadows, A/B candidate, fallback,
                                   and the history of earlier states (heads/serving_state.py)

A ModelStore is one tenant's folder of MODEL_STORE (`ModelStore.for_tenant`); the paths are
built by heads/layout.py, which checks every name, so none can reach outside the store. The
pointer is replaced atomically (write a temporary file, then rename), so a reader
sees the old state or the new one, never half of it. After every serving change the store's
generation (heads/generation.py, one file for all tenants) is bumped: routers poll that file
instead of every model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from heads import layout, serving_state
from heads.artifact import HeadArtifact, load_version
from heads.errors import HeadsError, RegistryError
from heads.generation import STORE_FILE, GenerationFile
from heads.known_checksums import KnownChecksums
from heads.manifest import Manifest
from heads.names import check_version_name
from heads.serving_state import ServingState

log = logging.getLogger(__name__)


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelStore:
    """The models in `root`. `tenant`: the tenant they belong to, when the store is a tenant's
    folder of MODEL_STORE (training from feedback reads that tenant's feedback by default)."""

    def __init__(self, root: str | Path, *, tenant: str | None = None):
        self.root = Path(root)
        self.tenant = tenant

    @classmethod
    def for_tenant(cls, store_root: str | Path, tenant: str) -> ModelStore:
        """The models of `tenant` in MODEL_STORE `store_root` (RegistryError for an unsafe name)."""
        return cls(layout.tenant_root(store_root, tenant), tenant=tenant)

    @property
    def generation(self) -> GenerationFile:
        """The counter bumped at every serving change: MODEL_STORE's, shared by all tenants, for a
        tenant's store; the store's own otherwise."""
        return GenerationFile((layout.store_root(self.root) if self.tenant is not None else self.root) / STORE_FILE)

    def model_dir(self, model: str) -> Path:
        return layout.model_dir(self.root, model)

    def version_dir(self, model: str, version: str) -> Path:
        return layout.version_dir(self.root, model, version)

    def new_staging_dir(self, model: str) -> Path:
        """An empty folder to write a version of `model` in, then rename to its version_dir."""
        return layout.new_staging_dir(self.root, model)

    def models(self) -> list[str]:
        """Models with at least one complete version. A model folder that cannot be read is listed
        too: loading it raises and names the problem, so an unreadable model is reported (and keeps
        serving where it served) instead of vanishing. RegistryError if the store cannot be listed."""
        return [name for name in layout.models(self.root) if self._has_versions(name)]

    def _has_versions(self, model: str) -> bool:
        try:
            return bool(self.versions(model))
        except RegistryError:
            return True

    def versions(self, model: str) -> list[str]:
        """Complete versions (with a manifest), oldest first: version ids sort by time. A version
        folder that cannot be read is listed (loading it names why: it must not vanish unseen);
        RegistryError when the model's folder cannot be listed."""
        return layout.versions(self.model_dir(model))

    def baseline(self, model: str, version: str) -> dict:
        """The version's training baseline (label and confidence distributions, embedding
        centroid) for drift, or {} when the version's manifest no longer reads from this store.
        Only the manifest is read: statistics need no checksums, and routers do not keep
        baselines in memory (see HeadArtifact.for_serving)."""
        try:
            return Manifest.read(self.version_dir(model, version)).baseline
        except (HeadsError, OSError):
            return {}

    def serving(self, model: str) -> ServingState | None:
        return serving_state.read_state(layout.serving_path(self.model_dir(model)))

    def serving_version(self, model: str) -> str:
        state = self.serving(model)
        if state is None:
            if not self.versions(model):
                raise RegistryError(f"unknown model {model!r}")
            raise RegistryError(f"model {model!r} has versions but none is serving: promote one")
        return state.primary

    def change_serving(
        self, model: str, change: Callable[[ServingState | None], ServingState], *, reason: str, rollback: bool = False
    ) -> ServingState:
        """Apply `change` to the model's serving state under a lock, validate the result against
        the store (every version loads; one embedder for all), and write it atomically. The state
        it replaces goes to the history, except for a rollback, which pops from it."""
        directory = self.model_dir(model)
        if not self.versions(model):
            raise RegistryError(f"unknown model {model!r}")
        with serving_state.locked(directory):
            current = self.serving(model)
            new = change(current)
            for version in new.versions():
                check_version_name(version)
            serving_state.check_state(new, lambda version: self.load(model, version).embedder_id)
            if rollback:
                now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                new = dataclasses.replace(new, updated_at=now, reason=reason)
            else:
                new = serving_state.stamp(new, current, reason)
            write_json_atomic(layout.serving_path(directory), new.to_dict())
            try:
                self.generation.bump()
            except OSError as exc:  # the change is written; routers see it at their next full scan
                log.warning("serving change of %s written, but the store generation was not bumped: %s", model, exc)
        return new

    def set_serving(self, model: str, version: str, *, reason: str = "") -> ServingState:
        """Make `version` the primary (the previous state goes to the history)."""
        return self.change_serving(
            model, lambda state: serving_state.promote(state, version), reason=reason or f"promote {version}"
        )

    def load(
        self,
        model: str,
        version: str | None = None,
        *,
        expected_embedder: str | None = None,
        expected_dim: int | None = None,
        verify_reports: bool = True,
        known_checksums: KnownChecksums | None = None,
        defer_weights_check: bool = False,
    ) -> HeadArtifact:
        """The version (default: the serving primary), verified (see load_version)."""
        version = version or self.serving_version(model)
        path = self.version_dir(model, version)
        if not layout.maybe_folder(path):
            raise RegistryError(f"model {model!r} has no version {version!r}")
        artifact = load_version(
            path,
            expected_embedder=expected_embedder,
            expected_dim=expected_dim,
            verify_reports=verify_reports,
            known_checksums=known_checksums,
            defer_weights_check=defer_weights_check,
        )
        # The store's folders name the model and version (a version copied to another model, or
        # restored under a new name, answers and is logged under the name it serves as).
        if (artifact.model, artifact.version) != (model, version):
            artifact = dataclasses.replace(artifact, model=model, version=version)
        return artifact

    def fingerprint(self) -> tuple:
        """Changes whenever a serving pointer changes or a model appears: routers poll it to
        reload heads without a restart. One stat per model: its folder is listed only when it has
        no serving pointer (a model whose first version is still being written is left out)."""
        entries = []
        root = str(self.root)
        for model in layout.models(self.root):  # names checked by the listing's pattern
            try:
                st = os.stat(os.path.join(root, model, layout.SERVING_FILE))
                entries.append((model, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError as exc:  # none yet, or unreadable: loading the model reports why
                if isinstance(exc, FileNotFoundError) and not self._has_versions(model):
                    continue
                entries.append((model, exc.errno, 0, 0))
        return tuple(entries)
