"""RouterSettings: API_* variables (and DATABASE_URL, MODEL_STORE, EMBEDDER_ADDRESS) through
pydantic-settings, overrides first."""

import pytest

from api.core.settings import describe, router_settings


def test_an_override_beats_the_environment(monkeypatch):
    monkeypatch.setenv("API_PORT", "9000")
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env")
    monkeypatch.setenv("API_DATABASE_URL", "postgresql://not-its-name")
    settings = router_settings(port=9100)
    assert (settings.port, settings.database_url) == (9100, "postgresql://from-env")
    assert router_settings(database_url="postgresql://given").database_url == "postgresql://given"


def test_an_explicit_mapping_replaces_the_environment(monkeypatch):
    monkeypatch.setenv("API_AUTH", "false")
    monkeypatch.setenv("MODEL_STORE", "/elsewhere")
    settings = router_settings({"EMBEDDER_ADDRESS": "embedder:50051"}, max_texts=8)
    assert (settings.auth, settings.model_store, settings.embedder_address) == (True, "var/models", "embedder:50051")
    assert settings.max_texts == 8


@pytest.mark.parametrize(
    ("spelling", "value"), [("on", True), ("OFF", False), ("Yes", True), ("0", False), ("true", True)]
)
def test_booleans_take_the_usual_spellings(spelling, value):
    assert router_settings({"API_SHARE_EMBEDDING_CACHE": spelling}).share_embedding_cache is value


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"API_PORT": "http"}, "API_PORT='http' is not a valid int"),
        ({"API_AUTH": "maybe"}, "API_AUTH='maybe' is not a valid bool"),
        ({"API_EMBED_TIMEOUT_S": "soon"}, "API_EMBED_TIMEOUT_S='soon' is not a valid float"),
        ({"API_MAX_TOP_K": "2"}, "invalid router settings: API_DEFAULT_TOP_K=3"),
    ],
)
def test_a_bad_variable_names_itself_in_one_line(environ, message):
    with pytest.raises(ValueError) as caught:
        router_settings(environ)
    assert str(caught.value) == message


def test_describe_keeps_the_shared_variable_names():
    variables = [var for var, _, _ in describe()]
    assert {"DATABASE_URL", "MODEL_STORE", "EMBEDDER_ADDRESS", "API_HOST", "API_LOG_BATCH_SIZE"} <= set(variables)
    assert not any(var.startswith("API_DATABASE") or var.startswith("API_MODEL_STORE") for var in variables)
