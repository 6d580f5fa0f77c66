"""Feature sets (embedder/features.py): names, ids and columns; the real model's pooled layers
through the service, the XLA path and gRPC."""

import dataclasses
import json
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from embedder.cache import PhraseCache
from embedder.client import EmbedderClient
from embedder.errors import FeaturesUnsupported, InvalidInput
from embedder.features import (
    SENTENCE,
    UnknownFeatures,
    embedding_id,
    parse_features,
    same_model,
    served_by,
    split_embedding_id,
)
from embedder.grpc_server import SERVICE_NAME, start_server
from embedder.proto import embedder_pb2 as pb
from embedder.service import EmbeddingService
from tests.conftest import MODEL_DIR

TEXTS = ["book a flight to paris", "what is my account balance", "how do i reset my password please"]


def wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_names_parse_to_layer_ranges_and_their_columns():
    assert parse_features("") == parse_features(SENTENCE) == parse_features("sentence")
    sentence, middle = parse_features("sentence"), parse_features("layers-4-6")
    assert (middle.first_layer, middle.last_layer, middle.layer_count) == (4, 6, 3)
    assert sentence.dim(384) == 384 and middle.dim(384) == 1152 and parse_features("layers-2-2").dim(8) == 8
    row = np.arange(6 * 2)  # six layers of two floats
    assert list(row[sentence.columns(2)]) == [10, 11]
    assert list(row[middle.columns(2)]) == [6, 7, 8, 9, 10, 11]
    assert list(row[parse_features("layers-1-1").columns(2)]) == [0, 1]
    for bad in ("layers-0-2", "layers-5-4", "layers-4", "Layers-4-6", "cls", "layers-4-6 ", "layers-04-6"):
        with pytest.raises(UnknownFeatures):
            parse_features(bad)
    middle.check(6)
    with pytest.raises(UnknownFeatures, match="serves layers 1-5"):
        middle.check(5)
    with pytest.raises(UnknownFeatures, match="only the sentence embedding"):
        middle.check(0)
    sentence.check(0)  # every model serves its sentence embedding


def test_an_embedding_id_names_the_model_and_the_features():
    assert embedding_id("enc@1", "") == embedding_id("enc@1", "sentence") == "enc@1"  # ids of older heads
    assert embedding_id("enc@1", "layers-4-6") == "enc@1#layers-4-6"
    assert split_embedding_id("enc@1#layers-4-6") == ("enc@1", "layers-4-6")
    assert split_embedding_id("enc@1") == ("enc@1", "sentence")
    assert same_model("enc@1", "enc@1#layers-4-6") and not same_model("enc@1", "enc@2#layers-4-6")
    assert served_by("enc@1#layers-4-6", "enc@1", 6) and served_by("enc@1", "enc@1", 0)
    assert not served_by("enc@1#layers-4-6", "enc@1", 0)  # a model without pooled layers
    assert not served_by("enc@1#layers-4-6", "enc@2", 6) and not served_by("enc@1#nonsense", "enc@1", 6)


@pytest.fixture(scope="module")
def service(minilm):
    service = EmbeddingService(minilm, cache=PhraseCache(1000))
    yield service
    service.close()


def test_the_pooled_layers_end_with_the_sentence_embedding_and_each_is_unit_length(service, minilm):
    sentence = service.embed(TEXTS).vectors
    layers = service.embed(TEXTS, features="layers-4-6")
    assert layers.features == "layers-4-6" and layers.vectors.shape == (3, 1152)
    np.testing.assert_allclose(layers.vectors[:, -384:], sentence, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(layers.vectors.reshape(3, 3, 384), axis=2), 1.0, rtol=1e-5)
    everything = minilm.embed_layers(TEXTS)
    assert everything.shape == (3, 6 * 384)
    np.testing.assert_allclose(everything[:, 3 * 384 :], layers.vectors, atol=1e-6)
    # Layer 4 is not layer 6: the blocks are different vectors (cosine well below 1).
    assert ((layers.vectors[:, :384] * sentence).sum(axis=1)).max() < 0.95


def test_a_layer_block_is_what_a_model_cut_after_that_layer_embeds(minilm):
    """An independent check of the order of the blocks: a BERT built from the same weights with
    only 4 layers gives, as its sentence embedding, the full model's block of layer 4."""
    from safetensors.numpy import load_file

    from embedder.bert import BertConfig, BertSentenceEncoder
    from embedder.convert import wheel_model_dir

    source = wheel_model_dir()
    config = BertConfig.from_hf_config(json.loads((source / "config.json").read_text()))
    cut = BertSentenceEncoder(load_file(str(source / "model.safetensors")), dataclasses.replace(config, num_layers=4))
    ids, mask = minilm.tokenize(TEXTS)
    expected = cut.embed_tokens(ids, mask)["embeddings"].numpy()
    got = minilm.embed_layers(TEXTS)[:, parse_features("layers-4-4").columns(384)]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_features_are_cached_apart_and_share_a_batch(minilm):
    calls = []
    release = threading.Event()

    class Counting:
        info, lanes = minilm.info, 1

        def embed(self, texts):
            raise AssertionError("a model with pooled layers always runs embed_layers")

        def embed_layers(self, texts):
            calls.append(list(texts))
            assert release.wait(60)
            return minilm.embed_layers(texts)

    service = EmbeddingService(Counting(), cache=PhraseCache(100), max_batch_size=8)
    try:
        results = {}

        def ask(features, text="one text two ways"):
            results[features] = service.embed([text], features=features)

        # The first request holds the model; the next two queue behind it and form one batch.
        threads = [threading.Thread(target=ask, args=("layers-1-1", "holds the model"))]
        threads[0].start()
        wait_until(lambda: calls)
        threads += [threading.Thread(target=ask, args=(f,)) for f in ("sentence", "layers-5-6")]
        for t in threads[1:]:
            t.start()
        wait_until(lambda: service.queue_depth == 2)
        release.set()
        for t in threads:
            t.join()
        assert calls == [["holds the model"], ["one text two ways"]]  # one model call, the text once
        assert results["sentence"].vectors.shape == (1, 384) and results["layers-5-6"].vectors.shape == (1, 768)
        np.testing.assert_allclose(results["layers-5-6"].vectors[:, 384:], results["sentence"].vectors, atol=1e-6)
        again = service.embed(["one text two ways"], features="layers-4-6")  # not the layers-5-6 entry
        assert again.cache_hits == [False] and again.vectors.shape == (1, 1152)
        assert service.embed(["one text two ways"], features="layers-5-6").cache_hits == [True]
        with pytest.raises(FeaturesUnsupported, match="serves layers 1-6"):
            service.embed(["x"], features="layers-6-7")
        with pytest.raises(InvalidInput, match="unknown features"):
            service.embed(["x"], features="cls")
    finally:
        service.close()


def test_compiled_single_texts_return_every_layer_as_the_graph_does(minilm):
    from embedder.encoder import load_encoder

    compiled = load_encoder(str(MODEL_DIR), xla_max_tokens=12)
    try:
        compiled.warm_up()
        assert compiled.runner.wait_compiled(timeout=600) and compiled.runner.failed_shapes == []
        text = "what is my balance"
        assert compiled.runner.compiled_for(compiled.tokenize([text])[0].shape[1])
        np.testing.assert_allclose(compiled.embed_layers([text]), minilm.embed_layers([text]), atol=1e-4)
    finally:
        compiled.close()


@pytest.fixture(scope="module")
def server(service):
    running = start_server(service, "127.0.0.1:0", threads=4)
    yield f"127.0.0.1:{running.port}"
    running.stop(1)


def test_features_through_grpc(server, service):
    client = EmbedderClient(server, timeout_s=30)
    assert client.info().layers == 6
    layers = client.embed(TEXTS, features="layers-4-6")
    assert layers.vectors.shape == (3, 1152) and layers.model_id == f"{service.info.model_id}#layers-4-6"
    sentence = client.embed(TEXTS)
    assert sentence.model_id == service.info.model_id
    np.testing.assert_allclose(layers.vectors[:, -384:], sentence.vectors, atol=1e-6)
    with pytest.raises(FeaturesUnsupported, match="serves layers 1-6"):  # FAILED_PRECONDITION on the wire
        client.embed(["x"], features="layers-1-9")
    with pytest.raises(InvalidInput, match="unknown features"):
        client.embed(["x"], features="cls")
    assert client.embed_all(TEXTS, chunk_size=2, features="layers-6-6").vectors.shape == (3, 384)


def test_a_server_that_predates_features_is_not_taken_for_one_that_serves_them():
    """An older server ignores the request's features and sends sentence vectors: the client
    must refuse them rather than hand a head 384 floats labelled as another feature set."""

    def embed(request, context):
        return pb.EmbedResponse(
            model=pb.ModelInfo(name="old", version="1", dim=2, model_id="old@1"),
            count=len(request.texts),
            embeddings=np.ones((len(request.texts), 2), "<f4").tobytes(),
            cache_hits=[False] * len(request.texts),
        )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(
        embed, request_deserializer=pb.EmbedRequest.FromString, response_serializer=pb.EmbedResponse.SerializeToString
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"Embed": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = EmbedderClient(f"127.0.0.1:{port}", timeout_s=10)
        assert client.embed(["a"]).vectors.shape == (1, 2)  # its sentence vectors still serve
        with pytest.raises(FeaturesUnsupported, match="features 'layers-4-6', it sent 'sentence'"):
            client.embed(["a"], features="layers-4-6")
    finally:
        server.stop(0)
