"""`make bench-router` calls the app with environs it builds itself: they must be requests the app
answers as it answers gunicorn's, or the benchmark measures an error path."""

from __future__ import annotations

import json

from loadtests.bench_router import Caller, predict_environ


def test_the_benchmarks_environ_is_a_prediction_the_app_answers(router):
    call = Caller(router.client.application)
    body = json.loads(call(predict_environ("intents", "book a table for two", router.keys["tenant"])))
    assert call.statuses == ["200 OK"]
    assert body["model"] == "intents" and len(body["predictions"]) == 1
    assert [r.input_text for r in router.sink.records] == ["book a table for two"]

    call(predict_environ("intents", "hello", "mh_000000000000_" + "x" * 43))  # a key the ring does not hold
    assert call.statuses[-1].startswith("401")
