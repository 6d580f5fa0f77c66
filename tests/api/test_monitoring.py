"""The drift monitor: one model whose report cannot be built never stops the others'."""

from __future__ import annotations

import datetime as dt

from prometheus_client import REGISTRY

from api.core import monitoring
from heads.errors import ArtifactError


class Store:
    def baseline(self, model, version):
        return {}


class Heads:
    root = "unused"

    def store(self, tenant):
        return Store()

    def all_sets(self):
        return {("acme", "broken"): None, ("acme", "fine"): None}


def test_a_model_whose_version_no_longer_loads_does_not_stop_the_others(monkeypatch):
    def build_report(db, model, since, until, *, tenant, baseline_of):
        if model == "broken":
            raise ArtifactError("acme/broken/v1: cannot read manifest.json (Permission denied)")
        return {"versions": [{"version": "v2", "role": "primary", "drift": {"label_psi": 0.25}}]}

    monkeypatch.setattr(monitoring, "build_report", build_report)
    monkeypatch.setattr(monitoring, "models_with_traffic", lambda *a: {("acme", "broken"), ("acme", "fine")})
    drift = monitoring.DriftMonitor(None, Heads(), interval_s=300.0, window=dt.timedelta(hours=1))
    drift._next_run = 0.0  # due now
    drift.run_if_due()
    labels = {"model": "acme/fine", "version": "v2", "role": "primary", "kind": "label_psi"}
    assert REGISTRY.get_sample_value("router_drift", labels) == 0.25


def test_only_the_elected_process_computes_drift(monkeypatch):
    built = []
    monkeypatch.setattr(monitoring, "build_report", lambda *a, **k: built.append(a[1]) or {"versions": []})
    monkeypatch.setattr(monitoring, "models_with_traffic", lambda *a: {("acme", "broken"), ("acme", "fine")})

    class Follower:
        def held(self):
            return False

        def close(self):
            pass

    drift = monitoring.DriftMonitor(None, Heads(), leadership=Follower())
    drift._next_run = 0.0
    drift.run_if_due()
    assert built == []
    drift = monitoring.DriftMonitor(None, Heads(), leadership=None)  # a lone process always runs it
    drift._next_run = 0.0
    drift.run_if_due()
    assert sorted(built) == ["broken", "fine"]


def test_drift_is_computed_only_for_models_with_traffic(monkeypatch):
    built = []
    monkeypatch.setattr(monitoring, "build_report", lambda *a, **k: built.append(a[1]) or {"versions": []})
    monkeypatch.setattr(monitoring, "models_with_traffic", lambda *a: {("acme", "fine"), ("other", "gone")})
    drift = monitoring.DriftMonitor(None, Heads())
    drift._next_run = 0.0
    drift.run_if_due()
    assert built == ["fine"]
