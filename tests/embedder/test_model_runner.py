"""Model calls: XLA-compiled small shapes against the graph, and calls spread over lanes (real model)."""

import contextlib
import threading
import time

import numpy as np
import pytest

from embedder.call_plan import MIN_SPLIT_TOKENS, plan_calls
from embedder.encoder import load_encoder
from embedder.model_runner import pad_to, xla_shape, xla_widths
from tests.conftest import MODEL_DIR


@pytest.fixture(scope="module")
def two_lanes():
    """The default model as the service runs it on two cores: two lanes, XLA for small calls."""
    encoder = load_encoder(str(MODEL_DIR), lanes=2, xla_max_tokens=64)
    encoder.warm_up()
    assert encoder.runner.wait_compiled(timeout=600)
    return encoder


@contextlib.contextmanager
def recorded_calls(encoder):
    """The (shape, thread name) of every model call `encoder` makes inside the block."""
    calls, lock, run = [], threading.Lock(), encoder.runner.run

    def recording_run(ids, mask):
        with lock:
            calls.append((ids.shape, threading.current_thread().name))
        return run(ids, mask)

    encoder.runner.run = recording_run
    try:
        yield calls
    finally:
        encoder.runner.run = run


def test_small_shapes_are_bucketed_and_large_ones_are_not_compiled():
    assert xla_widths(128) == (4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128)
    assert xla_widths(0) == () and xla_widths(3) == (3,) and xla_widths(100)[-3:] == (80, 96, 100)
    assert xla_shape(1, 3, 128) == (1, 4)  # [CLS] word [SEP]
    assert xla_shape(1, 14, 128) == (1, 16)
    assert xla_shape(1, 16, 128) == (1, 16)
    assert xla_shape(1, 17, 128) == (1, 20)
    assert xla_shape(1, 33, 128) == (1, 40)
    assert xla_shape(1, 97, 100) == (1, 100) and xla_shape(1, 101, 100) is None  # the cap is the last bucket
    assert xla_shape(1, 129, 128) is None  # past the token cap: the graph
    assert xla_shape(2, 8, 128) is None  # several texts: the graph
    assert xla_shape(1, 8, 0) is None  # XLA off
    for width in range(1, 257):  # at most 3 tokens of padding, or a quarter of the width
        _, bucket = xla_shape(1, width, 256)
        assert width <= bucket <= max(width + 3, width * 1.25), width
    ids, mask = pad_to(np.array([[5, 6, 7]], np.int32), np.array([[1, 1, 1]], np.int32), (1, 16))
    assert ids.shape == mask.shape == (1, 16) and mask.sum() == 3 and ids[0, :3].tolist() == [5, 6, 7]


def test_every_xla_shape_compiles_in_the_background_and_matches_the_graph(two_lanes, reference):
    runner = two_lanes.runner
    assert runner.compiled_shapes == [(1, w) for w in xla_widths(64)] == runner.shapes()
    assert runner.failed_shapes == []
    # Each compiled function reads the model's one set of variables: XLA would copy constants
    # into every shape (about 180 MB each for MiniLM).
    assert all(len(function.variables) >= 70 for function in runner._compiled.values())
    texts = [item["text"] for item in reference["items"]]
    short = [t for t in texts if len(two_lanes.tokenize([t])[0][0]) <= 64]
    assert len(short) >= 3
    for text in short:
        ids, mask = two_lanes.tokenize([text])
        compiled = runner.run(ids, mask)  # a compiled shape
        graph = runner._run_graph(ids, mask)
        assert np.abs(compiled - graph).max() < 1e-5
    expected = {item["text"]: np.array(item["embedding"], np.float32) for item in reference["items"]}
    got = two_lanes.embed(short)
    cosine = (got * np.stack([expected[t] for t in short])).sum(axis=1)
    assert cosine.min() > 0.9999


def test_an_uncompiled_shape_runs_the_graph_at_once_and_is_compiled_later():
    encoder = load_encoder(str(MODEL_DIR), lanes=1, xla_max_tokens=32)
    runner = encoder.runner
    assert runner.compiled_shapes == []
    ids, mask = encoder.tokenize(["what is the weather in paris tomorrow"])  # 9 tokens
    first = runner.run(ids, mask)  # nothing compiled yet: the graph answers, compilation starts
    assert runner.wait_compiled(timeout=600) and runner.compiled_shapes == [(1, 12)]
    assert np.abs(runner.run(ids, mask) - first).max() < 1e-5
    off = load_encoder(str(MODEL_DIR), lanes=1, xla_max_tokens=0)
    off.embed(["no compiling at all"])
    assert off.runner.shapes() == [] and off.runner.compiled_shapes == []


def test_a_shape_that_fails_to_compile_is_settled_as_failed_and_keeps_the_graph(monkeypatch):
    encoder = load_encoder(str(MODEL_DIR), lanes=1, xla_max_tokens=16)
    runner = encoder.runner

    def broken(shape):
        raise RuntimeError("no XLA today")

    monkeypatch.setattr(runner, "_compile", broken)
    ids, mask = encoder.tokenize(["turn the lights off"])
    first = runner.run(ids, mask)
    assert runner.wait_compiled(timeout=60)  # settled: waiting for it does not hang
    assert runner.failed_shapes == [(1, 8)] and runner.compiled_shapes == []  # 6 tokens
    assert np.array_equal(runner.run(ids, mask), first)  # the graph still answers, no retry
    assert runner.failed_shapes == [(1, 8)]


def test_a_large_batch_is_spread_over_the_lanes_and_answers_in_order(two_lanes, minilm, reference):
    texts = [item["text"] for item in reference["items"]] * 4
    lengths = np.array([len(two_lanes.tokenize([t])[0][0]) for t in texts])
    calls = plan_calls(lengths, max_tokens=two_lanes.max_batch_tokens, min_calls=2)
    assert len(calls) >= 2
    with recorded_calls(two_lanes) as calls:
        got = two_lanes.embed(texts)
    lanes_used = {thread for _, thread in calls}
    assert len(lanes_used) == 2 and all(name.startswith("model-lane") for name in lanes_used)
    assert np.abs(got - minilm.embed(texts)).max() < 1e-5


def test_plan_calls_halves_only_calls_large_enough_to_feed_another_lane():
    short = np.full(8, 12)  # 96 padded tokens: cheaper on one lane than split
    assert len(plan_calls(short, min_calls=2)) == 1
    many = np.full(64, 12)  # 768 padded tokens: one call by cost, halved for two lanes
    assert len(plan_calls(many)) == 1
    halves = plan_calls(many, min_calls=2)
    assert [len(c) for c in halves] == [32, 32]
    assert sorted(np.concatenate(halves).tolist()) == list(range(64))
    quarters = plan_calls(many, min_calls=4)
    assert [len(c) for c in quarters] == [16, 16, 16, 16] and 16 * 12 >= MIN_SPLIT_TOKENS
    assert len(plan_calls(np.array([200]), min_calls=2)) == 1  # one text cannot be split


def test_plan_calls_runs_a_few_texts_one_by_one_where_single_texts_are_compiled():
    lengths = np.array([9, 30, 12])
    calls = plan_calls(lengths, min_calls=2, singles_up_to=4)
    assert [c.tolist() for c in calls] == [[0], [2], [1]]  # one call per text, shortest first
    assert len(plan_calls(np.full(5, 12), min_calls=2, singles_up_to=4)) == 1  # more: one graph call
    assert len(plan_calls(lengths, min_calls=2)) == 1  # singles off


def test_a_few_texts_run_as_compiled_single_calls_on_both_lanes(two_lanes, minilm):
    texts = ["what is my balance", "book a table for two at eight tonight", "play some jazz"]
    widths = [two_lanes.tokenize([t])[0].shape[1] for t in texts]
    assert all(map(two_lanes.runner.compiled_for, widths))
    with recorded_calls(two_lanes) as calls:
        got = two_lanes.embed(texts)
    assert sorted(shape for shape, _ in calls) == sorted((1, w) for w in widths)  # 3 texts on 2 lanes: a call each
    assert all(thread.startswith("model-lane") for _, thread in calls)
    assert np.abs(got - minilm.embed(texts)).max() < 1e-5
    long_text = " ".join(["word"] * 80)  # 82 tokens, past the fixture's 64: the graph, in one call
    with recorded_calls(two_lanes) as calls:
        two_lanes.embed([long_text, long_text + " more"])
    assert [rows for (rows, _), _ in calls] == [2]


def test_embed_from_several_threads_runs_at_most_one_model_call_per_lane(two_lanes):
    state = {"now": 0, "most": 0}
    inside = threading.Condition()
    run = two_lanes.runner.run
    failures = []

    def embed(text):
        try:
            two_lanes.embed([text])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    def counting_run(ids, mask):
        with inside:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            inside.notify_all()
            inside.wait_for(lambda: state["now"] >= 2, timeout=30)  # two at once, however slow the start
        try:
            time.sleep(0.05)  # time for a third call to come in, were the limit broken
            return run(ids, mask)
        finally:
            with inside:
                state["now"] -= 1

    # One text each: a single call runs on its caller's thread, not on the lanes' pool.
    texts = ["what is my balance", "book a table for two", "play some jazz", "turn the lights off"]
    two_lanes.runner.run = counting_run
    try:
        callers = [threading.Thread(target=embed, args=(text,)) for text in texts]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(120)
    finally:
        two_lanes.runner.run = run
    assert not failures and not any(caller.is_alive() for caller in callers)
    assert state["most"] == 2  # 4 callers at once, never more calls than the 2 lanes
