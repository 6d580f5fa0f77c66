"""The real gRPC server on a free port: the real model for the contract, a deterministic fake
encoder where a test needs a slow or failing model."""

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from embedder.cache import PhraseCache
from embedder.client import EmbedderClient
from embedder.errors import DeadlineExceeded, InputTooLarge, InvalidInput, ModelFailure, Overloaded
from embedder.grpc_server import SERVICE_NAME, start_server
from embedder.proto import embedder_pb2 as pb
from embedder.service import EmbeddingService, Limits
from tests.fakes import HashEncoder


@pytest.fixture(scope="module")
def real_server(minilm):
    service = EmbeddingService(minilm, cache=PhraseCache(1000), limits=Limits(max_texts=64, max_text_chars=5000))
    running = start_server(service, "127.0.0.1:0", threads=8)
    yield f"127.0.0.1:{running.port}", service
    running.stop(1)
    service.close()


@pytest.fixture
def fake_server():
    started = []

    def start(encoder, **kwargs):
        kwargs.setdefault("cache", PhraseCache(100))
        service = EmbeddingService(encoder, **kwargs)
        running = start_server(service, "127.0.0.1:0", threads=8)
        started.append((running, service))
        return f"127.0.0.1:{running.port}"

    start.services = lambda: [service for _, service in started]
    yield start
    for running, service in started:
        running.stop(0)
        service.close(timeout=5)


def test_embed_matches_the_reference_through_grpc(real_server, reference):
    address, _ = real_server
    texts = [item["text"] for item in reference["items"]]
    expected = np.array([item["embedding"] for item in reference["items"]], dtype=np.float32)
    result = EmbedderClient(address, timeout_s=30).embed(texts)
    assert result.vectors.shape == expected.shape
    assert ((result.vectors * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)).min() > 0.9999
    assert result.model_id.startswith("all-MiniLM-L6-v2@")


def test_cache_hits_are_reported_per_text(real_server):
    address, _ = real_server
    client = EmbedderClient(address, timeout_s=30)
    first = client.embed(["grpc cache test one", "grpc cache test two"])
    second = client.embed(["GRPC  cache test one", "grpc cache test three"])
    assert list(first.cache_hits) == [False, False]
    assert list(second.cache_hits) == [True, False]
    np.testing.assert_array_equal(first.vectors[0], second.vectors[0])


def test_cache_scopes_share_no_hits(real_server):
    address, _ = real_server
    client = EmbedderClient(address, timeout_s=30)
    first = client.embed(["grpc scope test"], scope="acme")
    globex = client.embed(["grpc scope test"], scope="globex")
    assert list(first.cache_hits) == list(globex.cache_hits) == [False]
    assert list(client.embed(["grpc scope test"], scope="acme").cache_hits) == [True]
    np.testing.assert_allclose(first.vectors, globex.vectors, atol=1e-6)  # a scope changes no vector
    # A client that predates cache_scope sends no such field: it is in the shared namespace "".
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE_NAME}/Embed",
            request_serializer=lambda texts: pb.EmbedRequest(texts=texts).SerializeToString(),
            response_deserializer=pb.EmbedResponse.FromString,
        )
        assert list(stub(["grpc scope test"], timeout=30).cache_hits) == [False]
        assert list(client.embed(["grpc scope test"]).cache_hits) == [True]
        assert list(stub(["grpc scope test"], timeout=30).cache_hits) == [True]


def test_wire_format_is_packed_little_endian_float32(real_server):
    address, _ = real_server
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE_NAME}/Embed",
            request_serializer=pb.EmbedRequest.SerializeToString,
            response_deserializer=pb.EmbedResponse.FromString,
        )
        response = stub(pb.EmbedRequest(texts=["packed bytes", "second"]), timeout=30)
    assert response.count == 2 and len(response.cache_hits) == 2
    assert len(response.embeddings) == 2 * response.model.dim * 4
    vectors = np.frombuffer(response.embeddings, "<f4").reshape(2, -1)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_info_reports_model_and_limits(real_server):
    address, service = real_server
    info = EmbedderClient(address).info()
    assert (info.name, info.dim, info.lowercase, info.max_seq_length) == ("all-MiniLM-L6-v2", 384, True, 256)
    assert info.model_id == service.info.model_id
    assert (info.max_texts, info.max_text_chars) == (64, 5000)


def test_health_and_reflection(real_server):
    address, _ = real_server
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in next(responses).list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


def test_empty_list_returns_count_zero(real_server):
    address, _ = real_server
    result = EmbedderClient(address).embed([])
    assert result.vectors.shape == (0, 384)


def test_bad_input_is_invalid_argument_and_the_server_survives(real_server):
    address, _ = real_server
    client = EmbedderClient(address, timeout_s=30)
    with pytest.raises(InvalidInput, match=r"texts\[0\] is empty or whitespace-only"):
        client.embed(["   "])
    with pytest.raises(InputTooLarge, match="the limit is 5000"):
        client.embed(["word " * 1_000_000])  # 5 MB in one text
    with pytest.raises(InputTooLarge, match="too many texts: 3000; the limit is 64"):
        client.embed(["a phrase"] * 3000)
    assert client.embed(["still serving"]).vectors.shape == (1, 384)


def test_long_text_within_the_limit_is_truncated_not_refused(real_server, minilm):
    address, _ = real_server
    long_text = "the quick brown fox jumps over the lazy dog " * 100  # 900 one-token words, 4,400 chars
    result = EmbedderClient(address, timeout_s=30).embed([long_text])
    first_256_tokens = " ".join(long_text.split()[:254])  # with [CLS] and [SEP]: 256 tokens
    assert float(result.vectors[0] @ minilm.embed([first_256_tokens])[0]) > 0.99999


def test_invalid_utf8_is_invalid_argument(real_server):
    address, _ = real_server
    # Field 1 (texts), length 3, bytes that are not UTF-8: sent raw, bypassing the stub.
    with grpc.insecure_channel(address) as channel:
        raw = channel.unary_unary(f"/{SERVICE_NAME}/Embed", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\x0a\x03\xff\xfeA", timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "valid UTF-8" in caught.value.details()
    assert EmbedderClient(address).embed(["after bad bytes"]).vectors.shape == (1, 384)


def test_failed_model_call_fails_every_request_of_its_batch(fake_server):
    encoder = HashEncoder(fail_on="poison", delay_s=1.0)
    address = fake_server(encoder, max_wait_s=0.0)
    client = EmbedderClient(address, timeout_s=20)
    errors = []

    def call(text):
        try:
            client.embed([text])
        except ModelFailure as exc:
            errors.append(str(exc))

    # The three requests queue while the model is busy with a fourth, so they share the next batch.
    blocker = threading.Thread(target=call, args=("blocker",))
    blocker.start()
    deadline = time.monotonic() + 10
    while not encoder.calls and time.monotonic() < deadline:
        time.sleep(0.005)
    threads = [threading.Thread(target=call, args=(t,)) for t in ("poison", "innocent a", "innocent b")]
    for t in threads:
        t.start()
    for t in [blocker, *threads]:
        t.join()
    assert sorted(encoder.calls[1]) == ["innocent a", "innocent b", "poison"]
    assert len(errors) == 3 and all("injected failure" in e for e in errors)
    assert client.embed(["innocent a"]).vectors.shape == (1, 8)


def test_full_queue_fails_fast_with_resource_exhausted(fake_server):
    encoder = HashEncoder(delay_s=0.5)
    address = fake_server(encoder, max_wait_s=0.0, max_batch_size=2, max_queue=4, limits=Limits(max_texts=4))
    client = EmbedderClient(address, timeout_s=10)
    busy = threading.Thread(target=client.embed, args=(["a", "b"],))
    busy.start()
    while not encoder.calls:
        time.sleep(0.005)
    queued = threading.Thread(target=client.embed, args=(["c", "d", "e", "f"],))
    queued.start()
    (service,) = fake_server.services()
    while service.queue_depth < 4:  # the queue is full only once those four texts are in it
        time.sleep(0.005)
    started = time.monotonic()
    with pytest.raises(Overloaded, match="queue is full"):
        client.embed(["g"])
    assert time.monotonic() - started < 0.4  # fails fast, does not wait for room
    busy.join()
    queued.join()


def test_rpc_without_a_deadline_waits_for_the_model(fake_server):
    """grpcurl and plain stubs send no deadline; gRPC then reports centuries remaining."""
    address = fake_server(HashEncoder(delay_s=0.05), max_wait_s=0.0)
    with grpc.insecure_channel(address) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE_NAME}/Embed",
            request_serializer=pb.EmbedRequest.SerializeToString,
            response_deserializer=pb.EmbedResponse.FromString,
        )
        response = stub(pb.EmbedRequest(texts=["never seen", "nor this"]))
    assert response.count == 2
    assert list(response.cache_hits) == [False, False]


def test_client_deadline_is_honoured(fake_server):
    address = fake_server(HashEncoder(delay_s=2.0), max_wait_s=0.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        EmbedderClient(address).embed(["slow"], timeout=0.1)
    assert time.monotonic() - started < 1.5  # well before the model would have answered
