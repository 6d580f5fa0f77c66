"""The monitoring report against the documented SQL views, on rows made by real requests."""

import datetime as dt
import json
import math

import jsonschema
import pytest

from api.errors import from_database_error
from heads import serving_state
from inferencedb.errors import InferenceDbError, InvalidWindow
from inferencedb.monitoring_report import (
    ObservedModel,
    TrainingBaseline,
    drift,
    drift_inputs,
    parse_instant,
    parse_window,
    psi,
)
from tests.db.helpers import clear_of_midnight, query, wait_until


def test_psi():
    assert psi({"a": 50, "b": 50}, {"a": 0.5, "b": 0.5}) == pytest.approx(0.0)
    assert psi({"a": 90, "b": 10}, {"a": 50, "b": 50}) == pytest.approx(0.4 * 0.5878 + 0.4 * 1.6094, abs=1e-3)
    assert psi({}, {"a": 1}) is None
    # a label seen on one side only counts with a share of EPSILON (1e-4) on the other
    assert psi({"a": 1, "c": 1}, {"a": 1}) == pytest.approx(
        (1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    )


def test_window_parsing():
    now = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
    assert parse_window(None, None, now=now) == (now - dt.timedelta(days=1), now)
    since, until = parse_window("2026-11-01", "2026-11-02T00:00:00+00:00")
    assert since == dt.datetime(2026, 11, 1, tzinfo=dt.UTC) and until - since == dt.timedelta(days=1)
    assert parse_window(None, "2026-11-02") == (dt.datetime(2026, 11, 1, tzinfo=dt.UTC), until)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-01", dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
        ("2026-11-01T12:30:00Z", dt.datetime(2026, 11, 1, 12, 30, tzinfo=dt.UTC)),
        ("2026-11-01t12:30:00z", dt.datetime(2026, 11, 1, 12, 30, tzinfo=dt.UTC)),  # RFC 3339 allows lower case
        ("2026-11-01T12:30:00+02:00", dt.datetime(2026, 11, 1, 10, 30, tzinfo=dt.UTC)),
        ("2026-11-01T00:00:00-23:59", dt.datetime(2026, 11, 1, 23, 59, tzinfo=dt.UTC)),
        ("2026-11-01T12:30:00.1234567Z", dt.datetime(2026, 11, 1, 12, 30, 0, 123456, tzinfo=dt.UTC)),
        ("2026-12-31T23:59:60Z", dt.datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)),  # leap second
        ("0001-01-01", dt.datetime(1, 1, 1, tzinfo=dt.UTC)),
        ("9999-12-31T23:59:59Z", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)),
    ],
)
def test_instants_are_rfc_3339_dates_and_date_times(value, expected):
    assert parse_instant(value, "since") == expected


@pytest.mark.parametrize(
    ("value", "code", "message"),
    [
        ("yesterday", "invalid_request", "since must be an RFC 3339 date"),
        ("2026-11-01T12:30:00", "invalid_request", "with an offset"),  # no zone: not a date-time
        ("20261101", "invalid_request", "RFC 3339"),  # ISO 8601 basic format
        ("2026-W44-1", "invalid_request", "RFC 3339"),
        ("2026-11-01 12:30:00Z", "invalid_request", "RFC 3339"),
        ("\u0662\u0660\u0662\u0666-11-01", "invalid_request", "RFC 3339"),  # non-ASCII digits
        ("2026-02-30", "invalid_request", "not a date of the calendar"),
        ("2026-11-01T24:00:00Z", "invalid_request", "not a time of day"),
        ("2026-11-01T12:00:00+24:00", "invalid_request", "not a time of day"),
        ("0000-01-01", "invalid_window", "outside the years 1-9999"),
        ("0001-01-01T00:00:00+00:01", "invalid_window", "outside the years 1-9999 once converted to UTC"),
        ("9999-12-31T23:59:59-00:01", "invalid_window", "outside the years 1-9999 once converted to UTC"),
    ],
)
def test_bad_instants_are_422_naming_the_parameter(value, code, message):
    with pytest.raises(InferenceDbError) as caught:
        parse_instant(value, "since")
    as_http = from_database_error(caught.value)  # what the router answers
    assert as_http.status == 422 and as_http.code == code and message in as_http.message


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        (None, "0001-01-01", "until is too early for the default window"),  # once an OverflowError: 500
        ("2026-11-03", "2026-11-02", "must be earlier than until"),
        ("2026-11-02", "2026-11-02", "must be earlier than until"),
        ("2026-01-01", "2026-12-01", "limited to 92 days"),
    ],
)
def test_windows_that_make_no_sense_are_invalid_window(since, until, message):
    with pytest.raises(InvalidWindow) as caught:
        parse_window(since, until)
    assert caught.value.code == "invalid_window" and message in caught.value.message


def test_report_window_errors_over_http(router):
    """Answered before any database work (the `router` fixture has no database: that would be 503)."""
    for query_string, code in (
        ("until=0001-01-01", "invalid_window"),
        ("since=0001-01-01T00:00:00%2B01:00", "invalid_window"),
        ("since=2026-11-01T00:00:00", "invalid_request"),
        ("since=", "invalid_request"),
    ):
        response = router.client.get(f"/v1/models/intents/report?{query_string}")
        assert response.status_code == 422, query_string
        assert response.get_json()["error"]["code"] == code, query_string


def test_the_contract_declares_the_date_formats(router):
    document = router.client.get("/openapi.json").get_json()
    parameters = document["paths"]["/v1/models/{model}/report"]["get"]["parameters"]
    for name in ("since", "until"):
        (schema,) = [p["schema"] for p in parameters if p["name"] == name]
        assert sorted(s["format"] for s in schema["anyOf"]) == ["date", "date-time"]
    properties = document["components"]["schemas"]["Report"]["properties"]
    assert properties["since"]["format"] == properties["until"]["format"] == "date-time"


def predict(router, text, **headers):
    response = router.client.post(
        "/v1/models/intents/predict", data=json.dumps({"text": text}), content_type="application/json", headers=headers
    )
    response.close()  # runs the shadow job
    assert response.status_code == 200
    return response.get_json()


def test_report_numbers_equal_the_views(db_router):
    clear_of_midnight()  # the rows and the one-day window must fall on the same UTC day
    router, db = db_router
    store = router.store
    primary = store.serving_version("intents")
    others = [v for v in store.versions("intents") if v != primary]
    store.change_serving(
        "intents",
        lambda s: serving_state.set_candidate(serving_state.set_shadow(s, others[0], 1.0), others[1], 40),
        reason="test",
    )
    router.runtime.heads.refresh()
    answers = [
        predict(router, f"what is my balance {i}", **{"X-Client-ID": f"c{i}", "X-Request-ID": f"r{i}"})
        for i in range(60)
    ]
    for answer in answers[:20]:
        labels = router.runtime.heads.tenant("default").answer_labels("intents", answer["version"])
        router.client.post(
            f"/v1/predictions/{answer['request_id']}/feedback",
            data=json.dumps({"label": sorted(labels)[0]}),
            content_type="application/json",
        )
    wait_until(lambda: query(db, "SELECT count(*) FROM predictions")[0][0] == 120)  # 60 answers + 60 shadow rows
    wait_until(lambda: query(db, "SELECT count(*) FROM feedback")[0][0] == 20)
    # An answer without a probability counts for its label, and not in the confidence histogram
    # (the report reads both from one scan of the answers).
    query(
        db,
        "INSERT INTO predictions (row_id, created_at, tenant, model, version, role, request_id, item_index, "
        "label, probability, status) SELECT gen_random_uuid(), created_at, tenant, model, version, role, "
        "'no-probability', 0, 'no probability', NULL, 'ok' FROM predictions WHERE role = 'primary' LIMIT 1",
    )

    today = dt.datetime.now(dt.UTC).date()
    since, until = today.isoformat(), (today + dt.timedelta(days=1)).isoformat()
    response = router.client.get(f"/v1/models/intents/report?since={since}&until={until}")
    assert response.status_code == 200
    report = response.get_json()
    document = router.client.get("/openapi.json").get_json()
    jsonschema.validate(report, {"$ref": "#/components/schemas/Report", "components": document["components"]})

    by_key = {(v["version"], v["role"]): v for v in report["versions"]}
    assert {role for _, role in by_key} == {"primary", "candidate", "shadow"}
    assert sum(v["volume"] for v in report["versions"] if v["role"] != "shadow") == 61

    labels = query(
        db,
        "SELECT version, label, predictions FROM label_distribution_daily WHERE day = %s AND model = 'intents'",
        (today,),
    )
    from_views: dict = {}
    for version, label, count in labels:
        from_views.setdefault(version, {})[label] = from_views.setdefault(version, {}).get(label, 0) + count
    from_report: dict = {}
    for (version, _role), entry in by_key.items():
        for label, count in entry["label_distribution"].items():
            from_report.setdefault(version, {})[label] = from_report.setdefault(version, {}).get(label, 0) + count
    assert from_report == from_views
    assert sum(counts.get("no probability", 0) for counts in from_report.values()) == 1

    histogram = query(
        db, "SELECT version, bucket::float, predictions FROM confidence_histogram WHERE model = 'intents'"
    )
    view_histograms: dict = {}
    for version, bucket, count in histogram:
        view_histograms.setdefault(version, [0] * 10)[round(bucket * 10)] = count
    report_histograms: dict = {}
    for (version, _role), entry in by_key.items():
        for bucket, count in enumerate(entry["confidence_histogram"]):
            report_histograms.setdefault(version, [0] * 10)[bucket] += count
    assert report_histograms == view_histograms  # every bucket: the answer without a probability in none

    agreement = query(
        db,
        "SELECT answered_version, shadow_version, compared, agreed FROM shadow_agreement_daily WHERE day = %s",
        (today,),
    )
    assert sorted(
        (a["answered_version"], a["shadow_version"], a["compared"], a["agreed"]) for a in report["shadow_agreement"]
    ) == sorted(agreement)
    assert sum(a["compared"] for a in report["shadow_agreement"]) == 60

    for entry in report["versions"]:  # every version has a training baseline to compare with
        assert entry["drift"]["label_psi"] >= 0 and entry["drift"]["confidence_psi"] >= 0

    accuracy = query(
        db, "SELECT version, role, with_feedback, correct FROM feedback_accuracy_daily WHERE day = %s", (today,)
    )
    assert sorted(
        (v, r, e["feedback"]["count"], e["feedback"]["correct"])
        for (v, r), e in by_key.items()
        if e["feedback"]["count"]
    ) == sorted(accuracy)


def test_drift_against_a_training_baseline_by_hand():
    baseline = TrainingBaseline.from_manifest(
        {"label_distribution": {"a": 3, "b": 1}, "confidence_histogram": [0] * 9 + [4], "centroid": [1.0, 0.0]}
    )
    observed = ObservedModel()
    group = observed.group("v1", "primary")
    group.labels.update({"a": 1, "c": 1})  # c: not a training label; b: not seen live
    group.confidence[8] = group.confidence[9] = 1
    observed.add_centroid("v1", 2, [0.0, 2.0])
    eps = 1e-4  # the floor of a share in PSI

    def term(p, q):
        return (p - q) * math.log(p / q)

    assert drift(observed, "v1", "primary", baseline) == pytest.approx(
        {
            "label_psi": term(0.5, 0.75) + term(eps, 0.25) + term(0.5, eps),
            "confidence_psi": term(0.5, eps) + term(0.5, 1.0),
            "centroid_cosine_distance": 1.0,  # the live centroid (0, 1) is orthogonal to (1, 0)
        }
    )
    no_baseline = TrainingBaseline.from_manifest({})  # a version whose manifest does not read
    assert drift(observed, "v1", "primary", no_baseline) == {
        "label_psi": None,
        "confidence_psi": None,
        "centroid_cosine_distance": None,
    }
    assert drift(ObservedModel(), "v1", "primary", baseline)["label_psi"] is None  # no answers


def test_live_centroid_drift(db_router):
    router, db = db_router
    for i in range(10):
        predict(router, f"please transfer {i} dollars")
    assert router.runtime.centroids.flush(force=True) == 1
    # Before the report: its `until` must come after the minute the counts are written under.
    assert router.runtime.answer_counts.flush(force=True) >= 1
    assert query(db, "SELECT n FROM embedding_centroids") == [(10,)]
    wait_until(lambda: query(db, "SELECT count(*) FROM predictions")[0][0] == 10)  # the log writes asynchronously
    report = router.client.get("/v1/models/intents/report").get_json()
    (primary,) = [v for v in report["versions"] if v["role"] == "primary"]
    distance = primary["drift"]["centroid_cosine_distance"]
    assert distance is not None and 0 <= distance <= 2
    # The drift monitor's inputs, read for all models at once, give the report's figures.
    until = dt.datetime.fromisoformat(report["until"])
    observed = drift_inputs(router.runtime.database, until - dt.timedelta(days=1), until)
    store = router.store
    assert {
        (v["version"], v["role"]): drift(
            observed["default", "intents"],
            v["version"],
            v["role"],
            TrainingBaseline.from_manifest(store.baseline("intents", v["version"])),
        )
        for v in report["versions"]
    } == {(v["version"], v["role"]): v["drift"] for v in report["versions"]}
    # The drift monitor reads the routers' per-minute answer counts: the same distributions.
    counted = drift_inputs(router.runtime.database, until - dt.timedelta(days=1), until, counted=True)
    assert counted.keys() == observed.keys()
    assert counted["default", "intents"].groups == observed["default", "intents"].groups
    assert sum(sum(group.labels.values()) for group in counted["default", "intents"].groups.values()) >= 10


def test_report_refuses_bad_parameters(db_router):
    router, _ = db_router
    assert router.client.get("/v1/models/nope/report").status_code == 404
    assert router.client.get("/v1/models/..%2Fetc/report").status_code == 404
    assert router.client.get("/v1/models/intents/report?since=yesterday").status_code == 422
    assert router.client.get("/v1/models/intents/report?model=x").status_code == 422


def test_cli_renders_the_same_report_as_html(db_router, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    clear_of_midnight()
    router, db = db_router
    for i in range(12):
        predict(router, f"cancel my card {i}")
    wait_until(lambda: query(db, "SELECT count(*) FROM predictions")[0][0] == 12)
    today = dt.datetime.now(dt.UTC).date()
    window = ["--since", today.isoformat(), "--until", (today + dt.timedelta(days=1)).isoformat()]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "heads",
            "report",
            "intents",
            *window,
            "--store",
            str(router.store.root.parent),
            "--out",
            str(tmp_path / "r"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DATABASE_URL": db},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    page = (tmp_path / "r" / "report.html").read_text()
    assert (
        "volume.png" in page
        and "distributions-0.png" in page
        and (tmp_path / "r" / "distributions-0.png").stat().st_size > 1000
    )
    from_cli = json.loads((tmp_path / "r" / "report.json").read_text())
    from_api = router.client.get(f"/v1/models/intents/report?since={window[1]}&until={window[3]}").get_json()
    assert from_cli["versions"] == from_api["versions"]  # exactly: same code, deterministic sums
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "heads",
            "report",
            "intents",
            "--since",
            "soon",
            "--store",
            str(router.store.root.parent),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DATABASE_URL": db},
    )
    assert bad.returncode == 2 and "since must be an RFC 3339 date" in bad.stderr
