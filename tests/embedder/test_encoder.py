"""The TensorFlow port of all-MiniLM-L6-v2 against the reference vectors (real model)."""

import json

import numpy as np
import pytest

from embedder.call_plan import CALL_COST_TOKENS, plan_calls
from embedder.encoder import load_encoder
from embedder.normalize import normalize_text
from tests.conftest import MODEL_DIR


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_reproduces_every_reference_vector(minilm, reference):
    texts = [item["text"] for item in reference["items"]]
    expected = np.array([item["embedding"] for item in reference["items"]], dtype=np.float32)
    assert any(len(t.split()) > 256 for t in texts), "the reference set should include a truncated text"
    got = minilm.embed(texts)
    assert got.shape == (len(texts), reference["dim"])
    similarity = cosine(got, expected)
    assert similarity.min() > 0.9999, dict(zip(texts, similarity.round(6)))
    assert np.abs(got - expected).max() < 1e-5


def test_batch_composition_does_not_change_a_vector(minilm, reference):
    texts = [item["text"] for item in reference["items"]]
    together = minilm.embed(texts)
    alone = np.stack([minilm.embed([t])[0] for t in texts])
    assert np.abs(together - alone).max() < 1e-5


def test_a_mixed_batch_is_cut_into_calls_padded_to_their_own_longest_and_answers_in_order(minilm, reference):
    long_texts = [item["text"] for item in reference["items"] if len(item["text"].split()) > 100]
    short_texts = ["hi", "cancel my card", "what is the weather in paris tomorrow", "ok"] * 4
    texts = [t for pair in zip(short_texts, long_texts * 16) for t in pair]  # long and short interleaved
    lengths = np.array([len(minilm.tokenize([t])[0][0]) for t in texts])
    calls = plan_calls(lengths, max_tokens=minilm.max_batch_tokens)
    padded = sum(len(c) * lengths[c].max() for c in calls)
    assert len(calls) >= 2 and padded <= 1.05 * lengths.sum() < 0.6 * len(texts) * lengths.max()
    got = minilm.embed(texts)
    ids, mask = minilm.tokenize(texts)  # the old way: one call padded to the longest text
    one_call = minilm._fn(input_ids=ids, attention_mask=mask)["embeddings"].numpy()
    assert np.abs(got - one_call).max() < 1e-5


@pytest.mark.parametrize("n", [1, 2, 7, 64, 256])
def test_plan_calls_covers_every_text_once_within_the_token_cap(n):
    rng = np.random.default_rng(n)
    lengths = rng.integers(3, 257, n)
    calls = plan_calls(lengths, max_tokens=1024)
    assert sorted(np.concatenate(calls).tolist()) == list(range(n))
    for call in calls:
        assert len(call) == 1 or len(call) * lengths[call].max() <= 1024
    longest = [int(lengths[c].max()) for c in calls]
    assert longest == sorted(longest)  # calls hold texts of similar length, shortest first


def test_plan_calls_splits_only_where_the_padding_saved_outweighs_a_call():
    same = np.full(64, 12)
    assert len(plan_calls(same)) == 1  # nothing to save
    close = np.array([12, 13] * 8)
    assert len(plan_calls(close)) == 1  # 8 padded tokens saved < one call
    apart = np.array([4] * 32 + [200] * 2)
    calls = plan_calls(apart)
    assert [len(c) for c in calls] == [32, 2]  # 32 x 196 padded tokens saved >> one call
    assert CALL_COST_TOKENS > 0 and plan_calls(np.array([], dtype=np.int64)) == []


@pytest.mark.parametrize(
    "raw",
    [
        "  Refund   MY order\tplease \n",
        "naïve CAFÉ cafe\u0301 — Ünïcödé",
        "ΟΔΟΣ ΣΟΦΟΣ",
        "İstanbul ǅemal",
        "non\u00a0breaking\u3000spaces",
        "tabs\tand\r\nnewlines",
        "mixed 🍕 東京 Emoji",
    ],
)
def test_normalisation_never_changes_the_embedding(minilm, raw):
    normalized = normalize_text(raw, lowercase=minilm.info.lowercase)
    a, b = minilm.embed([raw, normalized])
    assert float(a @ b) > 0.99999, (raw, normalized)


def test_model_describes_itself(minilm):
    info = minilm.info
    assert info.name == "all-MiniLM-L6-v2"
    assert info.dim == 384 and info.lowercase is True and info.max_seq_length == 256
    assert info.model_id == f"{info.name}@{info.version}"


def test_tokenizer_and_metadata_travel_inside_the_saved_model():
    assets = MODEL_DIR / "assets"
    assert {"tokenizer.json", "encoder.json", "vocab.txt"} <= {p.name for p in assets.iterdir()}
    tokenizer = json.loads((assets / "tokenizer.json").read_text())
    assert tokenizer["padding"] is None
    assert tokenizer["truncation"]["max_length"] == 256


def test_the_bf16_mode_stays_within_a_cosine_of_the_float32_vectors(minilm, reference):
    """bf16 runs the graph's MatMuls in bfloat16 (XLA-compiled single texts stay float32)."""
    bf16 = load_encoder(str(MODEL_DIR), precision="bf16")
    texts = [item["text"] for item in reference["items"]]
    full = minilm.embed(texts)
    reduced = bf16.embed(texts)
    cosine = (full * reduced).sum(axis=1)
    assert cosine.min() > 0.999 and np.abs(full - reduced).max() > 1e-6  # close, and really bf16
    meta = json.loads((MODEL_DIR / "assets" / "encoder.json").read_text())
    assert meta["precisions"] == ["bf16", "fp32"]


def test_a_precision_the_model_lacks_is_refused_by_name():
    from types import SimpleNamespace

    from embedder.encoder import EncoderInfo, TokenInputEncoder

    old_build = SimpleNamespace(signatures={"embed_tokens": object()})
    with pytest.raises(ValueError, match="no bf16 signature.*make setup"):
        TokenInputEncoder(old_build, EncoderInfo("m", "1", 4, True, 8), precision="bf16")


def test_missing_model_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="embedding model not found"):
        load_encoder(str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match="not a SavedModel"):
        load_encoder(str(tmp_path))


def test_a_plain_string_input_saved_model_loads_too(tmp_path):
    """The TF Hub path: any SavedModel callable on a batch of strings (like the Universal
    Sentence Encoder) is served, with its dimension probed and a fingerprint as version."""
    import tensorflow as tf

    class CharCounts(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            length = tf.cast(tf.strings.length(texts), tf.float32)
            return tf.stack([length, tf.ones_like(length), -length], axis=1)

    tf.saved_model.save(CharCounts(), str(tmp_path / "char-counts"))
    encoder = load_encoder(str(tmp_path / "char-counts"))
    assert encoder.info.name == "char-counts" and encoder.info.dim == 3 and not encoder.info.lowercase
    assert len(encoder.info.version) == 12
    np.testing.assert_array_equal(encoder.embed(["abc"]), [[3.0, 1.0, -3.0]])
    named = load_encoder(str(tmp_path / "char-counts"), name="counts", version="7")
    assert named.info.model_id == "counts@7"
    with pytest.raises(ValueError, match="only precision fp32"):
        load_encoder(str(tmp_path / "char-counts"), precision="bf16")


def test_normalisation_is_invisible_to_the_model_on_random_unicode(minilm):
    import random
    import unicodedata

    rng = random.Random(20261122)
    letters = [chr(c) for c in range(0x20, 0x3000) if unicodedata.category(chr(c))[0] in "LMNPS"]
    spaces = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000"]
    raws = []
    for _ in range(300):
        words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 6))]
        text = "".join(w + rng.choice(spaces) for w in words)
        raws.append(rng.choice(["", " ", "\t"]) + (text.upper() if rng.random() < 0.3 else text))
    normalized = [normalize_text(t, lowercase=minilm.info.lowercase) for t in raws]
    a, b = minilm.embed(raws), minilm.embed(normalized)
    similarity = (a * b).sum(axis=1)
    worst = int(similarity.argmin())
    assert similarity.min() > 0.99999, (raws[worst], normalized[worst])


def test_in_the_bf16_mode_single_texts_compile_checked_against_float32(minilm):
    """The compiled single-text functions of the bf16 mode are checked against the float32
    variables (the mode keeps no frozen float32 copy) and answer in float32."""
    bf16 = load_encoder(str(MODEL_DIR), precision="bf16", xla_max_tokens=12)
    bf16.warm_up()
    assert bf16.runner.wait_compiled(timeout=600)
    assert bf16.runner.failed_shapes == [] and len(bf16.runner.compiled_shapes) == 3  # widths 4, 8, 12
    text = "what is my balance"  # 6 tokens: a compiled shape
    assert bf16.runner.compiled_for(bf16.tokenize([text])[0].shape[1])
    assert np.abs(bf16.embed([text]) - minilm.embed([text])).max() < 1e-5  # float32, not bfloat16
