import threading
import time

import numpy as np
import pytest

from embedder.cache import PhraseCache
from embedder.errors import DeadlineExceeded, InputTooLarge, InvalidInput, ModelFailure, Overloaded
from embedder.service import EmbeddingService, Limits, dedupe
from tests.fakes import HashEncoder


@pytest.fixture
def make_service():
    services = []

    def make(encoder=None, **kwargs):
        kwargs.setdefault("cache", PhraseCache(1000))
        kwargs.setdefault("max_wait_s", 0.01)
        service = EmbeddingService(encoder or HashEncoder(), **kwargs)
        services.append(service)
        return service

    yield make
    for service in services:
        service.close(timeout=5)


def test_dedupe_is_pure_and_keeps_first_seen_order():
    assert dedupe([b"b", b"a", b"b", b"c", b"a"]) == ([b"b", b"a", b"c"], [0, 1, 0, 2, 1])
    assert dedupe([]) == ([], [])


def test_vectors_in_request_order_from_normalised_text(make_service):
    encoder = HashEncoder()
    service = make_service(encoder)
    result = service.embed(["Refund  my order", "cancel"])
    assert result.vectors.shape == (2, 8) and result.vectors.dtype == np.float32
    np.testing.assert_array_equal(result.vectors[0], HashEncoder.vector("refund my order"))
    np.testing.assert_array_equal(result.vectors[1], HashEncoder.vector("cancel"))
    assert result.cache_hits == [False, False]


def test_duplicates_in_one_request_are_computed_once(make_service):
    encoder = HashEncoder()
    service = make_service(encoder)
    result = service.embed(["hello world", "Hello   World", "other", "hello world"])
    assert sorted(encoder.texts_embedded) == ["hello world", "other"]
    np.testing.assert_array_equal(result.vectors[0], result.vectors[1])
    np.testing.assert_array_equal(result.vectors[0], result.vectors[3])


def test_second_request_hits_the_cache(make_service):
    encoder = HashEncoder()
    service = make_service(encoder)
    first = service.embed(["a phrase", "another"])
    second = service.embed(["A PHRASE", "new one"])
    assert second.cache_hits == [True, False]
    np.testing.assert_array_equal(first.vectors[0], second.vectors[0])
    assert encoder.texts_embedded.count("a phrase") == 1
    stats = service.cache.stats()
    assert (stats.hits, stats.misses) == (1, 3)


def test_case_is_kept_for_models_that_do_not_lowercase(make_service):
    encoder = HashEncoder(lowercase=False)
    service = make_service(encoder)
    result = service.embed(["Apple", "apple"])
    assert sorted(encoder.texts_embedded) == ["Apple", "apple"]
    assert not np.array_equal(result.vectors[0], result.vectors[1])


@pytest.mark.parametrize("lanes", [1, 2])
def test_concurrent_requests_for_the_same_phrases_compute_them_once(make_service, lanes):
    encoder = HashEncoder(delay_s=0.2, lanes=lanes)
    service = make_service(encoder, max_wait_s=0.0, max_batch_size=4)
    phrases = [f"phrase {i}" for i in range(6)]
    outputs = []

    def call():
        outputs.append(service.embed(phrases))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outputs) == 8
    assert sorted(encoder.texts_embedded) == sorted(phrases)
    for out in outputs:
        np.testing.assert_array_equal(out.vectors, outputs[0].vectors)


def test_empty_list_returns_no_vectors(make_service):
    result = make_service().embed([])
    assert result.vectors.shape == (0, 8) and result.cache_hits == []


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\u200b"])
def test_blank_text_is_invalid_and_names_its_index(make_service, text):
    with pytest.raises(InvalidInput, match=r"texts\[1\] is empty or whitespace-only"):
        make_service().embed(["fine", text])


def test_limits_name_the_limit(make_service):
    service = make_service(limits=Limits(max_texts=3, max_text_chars=10))
    with pytest.raises(InputTooLarge, match="too many texts: 4; the limit is 3"):
        service.embed(["a", "b", "c", "d"])
    with pytest.raises(InputTooLarge, match=r"texts\[0\] has 11 characters; the limit is 10"):
        service.embed(["x" * 11])


@pytest.mark.parametrize("lanes", [1, 2])
def test_model_failure_fails_the_batch_and_the_service_goes_on(make_service, lanes):
    encoder = HashEncoder(fail_on="poison", lanes=lanes)
    service = make_service(encoder)
    with pytest.raises(ModelFailure, match="injected failure"):
        service.embed(["poison", "bystander"])
    assert service.embed(["bystander"]).cache_hits == [False]  # the failure was not cached
    assert service.embed(["bystander"]).cache_hits == [True]


@pytest.mark.parametrize("lanes", [1, 2])
def test_deadline_is_honoured(make_service, lanes):
    service = make_service(HashEncoder(delay_s=2.0, lanes=lanes), max_wait_s=0.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        service.embed(["slow"], timeout=0.05)
    assert time.monotonic() - started < 1.5  # well before the model would have answered


def test_full_queue_is_overloaded(make_service):
    encoder = HashEncoder(delay_s=0.3)
    service = make_service(encoder, max_wait_s=0.0, max_batch_size=2, max_queue=4, limits=Limits(max_texts=4))
    background = threading.Thread(target=service.embed, args=(["a", "b"],))
    background.start()
    while not encoder.calls:
        time.sleep(0.005)
    service_queue_filler = threading.Thread(target=service.embed, args=(["c", "d", "e", "f"],))
    service_queue_filler.start()
    while service.queue_depth < 4:
        time.sleep(0.005)
    with pytest.raises(Overloaded, match="queue is full"):
        service.embed(["g"])
    background.join()
    service_queue_filler.join()
    assert service.embed(["g"]).vectors.shape == (1, 8)


def test_scopes_share_no_cache_entry(make_service):
    encoder = HashEncoder()
    service = make_service(encoder)
    first = service.embed(["a phrase"], scope="acme")
    assert service.embed(["A  phrase"], scope="globex").cache_hits == [False]
    assert service.embed(["a phrase"]).cache_hits == [False]  # "" is a scope of its own: the shared one
    assert service.embed(["a phrase"], scope="acme").cache_hits == [True]
    assert encoder.texts_embedded == ["a phrase"] * 3
    np.testing.assert_array_equal(first.vectors, service.embed(["a phrase"], scope="globex").vectors)


class GatedEncoder(HashEncoder):
    """Blocks every model call until `gate` is set; `entered` is set once a call has begun."""

    def __init__(self):
        super().__init__()
        self.entered, self.gate = threading.Event(), threading.Event()

    def embed(self, texts):
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return super().embed(texts)


def _wait_for(condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_scopes_share_no_computation_in_flight(make_service):
    encoder = GatedEncoder()
    service = make_service(encoder, max_wait_s=0.0)
    results = {}

    def embed(name, scope):
        results[name] = service.embed(["in flight"], scope=scope, timeout=10)

    threads = [threading.Thread(target=embed, args=("acme", "acme"))]
    threads[0].start()
    try:
        _wait_for(encoder.entered.is_set)  # acme's text is in the model (held at the gate)
        for name, scope in (("acme again", "acme"), ("globex", "globex")):
            threads.append(threading.Thread(target=embed, args=(name, scope)))
            threads[-1].start()
            time.sleep(0.05)
        # Only globex's text waits for the model: acme's repeat waits on acme's computation.
        _wait_for(lambda: service.requests_in_flight == 3 and service.queue_depth == 1)
        time.sleep(0.05)
        assert service.queue_depth == 1
    finally:
        encoder.gate.set()
        for thread in threads:
            thread.join(10)
    assert encoder.texts_embedded == ["in flight", "in flight"]  # acme's, and globex's own
    assert results["acme"].cache_hits == results["globex"].cache_hits == [False]
    np.testing.assert_array_equal(results["acme again"].vectors, results["acme"].vectors)


@pytest.mark.parametrize("lanes", [1, 2])
def test_a_lone_request_does_not_wait_for_company_but_concurrent_ones_share_a_batch(make_service, lanes):
    sizes = []
    encoder = HashEncoder(lanes=lanes)
    embed = encoder.embed

    def recording_embed(texts):
        sizes.append(len(texts))
        time.sleep(0.3)  # a model call long enough for the next requests to gather
        return embed(texts)

    encoder.embed = recording_embed
    service = make_service(encoder, max_wait_s=10.0)
    started = time.monotonic()
    service.embed(["alone"])
    assert time.monotonic() - started < 5.0 and sizes == [1]  # not the 10 s max wait
    together = threading.Barrier(8)

    def request(i):
        together.wait(10)
        service.embed([f"text {i}"])

    threads = [threading.Thread(target=request, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # The requests on their way were waited for: at most one batch per lane, and one more for
    # those that came while every lane was busy.
    assert sum(sizes[1:]) == 8 and len(sizes) - 1 <= lanes + 1
