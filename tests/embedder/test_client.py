import multiprocessing
import threading
import time

import pytest

from devtools.processes import free_port
from embedder.cache import PhraseCache
from embedder.client import EmbedderClient
from embedder.errors import Unavailable
from embedder.grpc_server import start_server
from embedder.service import EmbeddingService
from tests.fakes import HashEncoder


def test_unreachable_server_raises_unavailable_after_retries():
    client = EmbedderClient(f"127.0.0.1:{free_port()}", retries=2, backoff_s=0.01, timeout_s=5)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        client.embed(["nobody listens"])
    assert time.monotonic() - started < 4


def test_retries_until_the_server_comes_up():
    port = free_port()
    service = EmbeddingService(HashEncoder(), cache=PhraseCache(10))
    holder = {}

    def start_later():
        time.sleep(0.4)
        holder["server"] = start_server(service, f"127.0.0.1:{port}", threads=2)

    thread = threading.Thread(target=start_later)
    thread.start()
    try:
        client = EmbedderClient(f"127.0.0.1:{port}", retries=40, backoff_s=0.1, max_backoff_s=0.3, timeout_s=10)
        assert client.embed(["eventually"]).vectors.shape == (1, 8)
    finally:
        thread.join()
        holder["server"].stop(0)
        service.close()


def _embed_in_child(client: EmbedderClient, results) -> None:
    results.put(client.embed(["from a forked worker"]).vectors.shape)


def test_client_built_before_fork_works_in_forked_workers():
    """The gunicorn pattern: the app (and its client) exist before fork; each worker makes its
    own channel on first use."""
    service = EmbeddingService(HashEncoder(), cache=PhraseCache(10))
    running = start_server(service, "127.0.0.1:0", threads=2)
    try:
        client = EmbedderClient(f"127.0.0.1:{running.port}", timeout_s=10)
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        workers = [ctx.Process(target=_embed_in_child, args=(client, results)) for _ in range(2)]
        for w in workers:
            w.start()
        shapes = [results.get(timeout=30) for _ in workers]
        for w in workers:
            w.join(10)
        assert shapes == [(1, 8), (1, 8)]
        assert all(w.exitcode == 0 for w in workers)
    finally:
        running.stop(0)
        service.close()


def test_every_chunk_is_sent_in_the_callers_scope():
    service = EmbeddingService(HashEncoder(), cache=PhraseCache(10))
    running = start_server(service, "127.0.0.1:0", threads=2)
    try:
        client = EmbedderClient(f"127.0.0.1:{running.port}", timeout_s=10)
        texts = ["one", "two", "three"]
        assert not client.embed_all(texts, chunk_size=2, scope="acme").cache_hits.any()
        assert service.embed(texts, scope="acme").cache_hits == [True, True, True]
        assert service.embed(texts).cache_hits == [False, False, False]
    finally:
        running.stop(0)
        service.close()
