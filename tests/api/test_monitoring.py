"""The drift monitor: elected, for the models this router serves that answered in the window; one
model whose baseline cannot be read never stops the others'."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client import REGISTRY

from api.core import monitoring
from heads.errors import ArtifactError
from inferencedb.monitoring_report import ObservedModel, psi


class Store:
    def __init__(self):
        self.asked = []

    def baseline(self, model, version):
        self.asked.append((model, version))
        if model == "broken":
            raise ArtifactError("acme/broken/v2: cannot read manifest.json (Permission denied)")
        return {"label_distribution": {"a": 0.5, "b": 0.5}}


class Heads:
    root = "unused"

    def __init__(self, store=None):
        self._store = store or Store()

    def store(self, tenant):
        return self._store

    def all_sets(self):
        return {("acme", "broken"): None, ("acme", "fine"): None}


def observed_inputs(*models):
    """What drift_inputs gives for `models` of tenant acme: one primary v2 answering label a."""
    inputs = {}
    for model in models:
        inputs["acme", model] = ObservedModel()
        inputs["acme", model].group("v2", "primary").labels["a"] = 10
    return lambda *a, **k: inputs


def test_a_model_whose_version_no_longer_loads_does_not_stop_the_others(monkeypatch):
    monkeypatch.setattr(monitoring, "drift_inputs", observed_inputs("broken", "fine"))
    drift = monitoring.DriftMonitor(None, Heads(), interval_s=300.0, window=dt.timedelta(hours=1))
    drift._next_run = 0.0  # due now
    drift.run_if_due()
    labels = {"model": "acme/fine", "version": "v2", "role": "primary", "kind": "label_psi"}
    # 10 answers of "a" against a baseline of a and b in halves
    assert REGISTRY.get_sample_value("router_drift", labels) == pytest.approx(psi({"a": 10}, {"a": 1, "b": 1}))
    assert REGISTRY.get_sample_value("router_drift", {**labels, "model": "acme/broken"}) is None


def test_only_the_elected_process_computes_drift(monkeypatch):
    asked = []
    monkeypatch.setattr(monitoring, "drift_inputs", lambda *a, **k: asked.append(k) or {})

    class Follower:
        def held(self):
            return False

        def close(self):
            pass

    drift = monitoring.DriftMonitor(None, Heads(), leadership=Follower())
    drift._next_run = 0.0
    drift.run_if_due()
    assert asked == []
    drift = monitoring.DriftMonitor(None, Heads(), leadership=None)  # a lone process always runs it
    drift._next_run = 0.0
    drift.run_if_due()
    assert asked == [{"counted": True}]  # from the routers' answer counts, not a scan of the hour


def test_drift_is_computed_only_for_the_models_this_router_serves(monkeypatch):
    monkeypatch.setattr(monitoring, "drift_inputs", observed_inputs("fine", "elsewhere"))
    store = Store()
    drift = monitoring.DriftMonitor(None, Heads(store))
    drift._next_run = 0.0
    drift.run_if_due()
    assert store.asked == [("fine", "v2")]


def test_a_version_baseline_is_read_once_and_dropped_when_out_of_the_window(monkeypatch):
    inputs = observed_inputs("fine")
    monkeypatch.setattr(monitoring, "drift_inputs", inputs)
    store = Store()
    drift = monitoring.DriftMonitor(None, Heads(store))
    for _ in range(2):
        drift._next_run = 0.0
        drift.run_if_due()
    assert store.asked == [("fine", "v2")]  # versions are immutable: the second run kept it
    labels = {"model": "acme/fine", "version": "v2", "role": "primary", "kind": "label_psi"}
    assert REGISTRY.get_sample_value("router_drift", labels) == pytest.approx(psi({"a": 10}, {"a": 1, "b": 1}))

    monkeypatch.setattr(monitoring, "drift_inputs", lambda *a, **k: {})  # no answers in the window
    drift._next_run = 0.0
    drift.run_if_due()
    monkeypatch.setattr(monitoring, "drift_inputs", inputs)
    drift._next_run = 0.0
    drift.run_if_due()
    assert store.asked == [("fine", "v2"), ("fine", "v2")]  # forgotten with the window, read again


def test_a_baseline_that_did_not_read_is_read_again(monkeypatch):
    monkeypatch.setattr(monitoring, "drift_inputs", observed_inputs("fine"))

    class Syncing(Store):
        def baseline(self, model, version):
            self.asked.append((model, version))
            return {} if len(self.asked) == 1 else {"label_distribution": {"a": 1}}

    store = Syncing()
    drift = monitoring.DriftMonitor(None, Heads(store))
    for _ in range(3):
        drift._next_run = 0.0
        drift.run_if_due()
    assert len(store.asked) == 2
    labels = {"model": "acme/fine", "version": "v2", "role": "primary", "kind": "label_psi"}
    assert REGISTRY.get_sample_value("router_drift", labels) == pytest.approx(0.0)
