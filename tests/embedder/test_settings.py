"""EmbedderSettings: EMBEDDER_* variables through pydantic-settings, overrides first."""

import pytest

from embedder.settings import describe, embedder_settings


def test_an_override_beats_the_environment(monkeypatch):
    monkeypatch.setenv("EMBEDDER_CACHE_SIZE", "7")
    monkeypatch.setenv("EMBEDDER_MAX_WAIT_MS", "0.5")
    settings = embedder_settings(cache_size=3)
    assert (settings.cache_size, settings.max_wait_ms) == (3, 0.5)
    assert embedder_settings({"EMBEDDER_CACHE_SIZE": "9"}).cache_size == 9  # a mapping instead of os.environ
    assert embedder_settings({}).cache_size == 50_000


def test_a_bad_variable_names_itself(monkeypatch):
    monkeypatch.setenv("EMBEDDER_MAX_BATCH_SIZE", "lots")
    with pytest.raises(ValueError, match=r"^EMBEDDER_MAX_BATCH_SIZE='lots' is not a valid int$"):
        embedder_settings()


def test_precision_is_one_of_the_named_modes(monkeypatch):
    assert embedder_settings().precision == "fp32"
    assert embedder_settings({"EMBEDDER_PRECISION": "bf16"}).precision == "bf16"
    with pytest.raises(ValueError, match=r"^EMBEDDER_PRECISION='fp16': input should be 'fp32' or 'bf16'$"):
        embedder_settings({"EMBEDDER_PRECISION": "fp16"})


def test_cross_field_checks_name_the_variables():
    with pytest.raises(ValueError, match=r"^invalid embedder settings: EMBEDDER_MAX_QUEUE=8, EMBEDDER_MAX_TEXTS=1024"):
        embedder_settings({"EMBEDDER_MAX_QUEUE": "8"})
    with pytest.raises(ValueError, match="unknown setting 'cache'"):
        embedder_settings(cache=1)


def test_settings_are_frozen():
    settings = embedder_settings({})
    with pytest.raises(ValueError):
        settings.cache_size = 1


def test_describe_lists_every_variable_with_its_default():
    listing = {var: (default, doc) for var, default, doc in describe()}
    assert listing["EMBEDDER_ADDRESS"][0] == "127.0.0.1:50051"
    assert listing["EMBEDDER_MAX_WAIT_MS"] == (2.0, "longest a text waits for others to join its batch")
    assert all(doc for _, doc in listing.values())
