import dataclasses

import pytest

from heads.config import (
    HEAD_FAMILIES,
    FeedbackSource,
    HeadConfig,
    SqlSource,
    config_to_dict,
    default_batch_size,
    default_learning_rate,
    large_split_recipe,
    load_config,
    parse_config,
)
from heads.errors import ConfigError
from heads.trainer import DenseSpec


def test_defaults_and_round_trip():
    config = parse_config({"name": "intents", "data": {"train": "train.csv"}})
    assert isinstance(config, HeadConfig)
    assert config.model.hidden_layers == (512,) and config.training.seed == 13
    assert config.model.features == "layers-4-6"
    assert config.threshold.policy == "auto"
    assert parse_config(config_to_dict(config)) == config


def test_sql_source_is_a_mapping():
    config = parse_config({"name": "x", "data": {"train": {"query": "SELECT text, label FROM t"}}})
    assert config.data.train.query == "SELECT text, label FROM t"


def test_sources_are_told_apart_by_their_keys():
    train = ["t.csv", {"query": "SELECT 1"}, {"model": "intents", "since": "2024-01-01"}]
    config = parse_config({"name": "x", "data": {"train": train, "validation": {"query": "SELECT 2"}}})
    file, sql, feedback = config.data.train
    assert file == "t.csv" and isinstance(sql, SqlSource) and isinstance(feedback, FeedbackSource)
    assert feedback.tenant is None  # the tenant the model is trained for, resolved by the pipeline
    assert config_to_dict(config)["data"]["train"][2]["tenant"] is None
    assert parse_config(config_to_dict(config)) == config


def test_learning_rate_defaults_to_the_model_type_and_replace_revalidates():
    config = parse_config({"name": "x", "data": {"train": "t.csv"}, "model": {"type": "ngram"}})
    assert config.training.learning_rate == 0.01
    seeded = dataclasses.replace(config, training=dataclasses.replace(config.training, seed=7))
    assert (seeded.training.seed, seeded.training.learning_rate) == (7, 0.01)
    with pytest.raises(ValueError, match="epochs"):
        dataclasses.replace(config.training, epochs="many")


def test_model_type_auto_tries_its_candidates_and_a_pinned_type_only_itself():
    auto = parse_config({"name": "x", "data": {"train": "t.csv"}})
    assert auto.model.type == "auto" and auto.families == ("mlp", "logistic")  # the ensemble only when listed
    every = parse_config({"name": "x", "data": {"train": "t.csv"}, "selection": {"candidates": list(HEAD_FAMILIES)}})
    assert every.families == ("mlp", "logistic", "ensemble") and parse_config(config_to_dict(every)) == every
    assert auto.training.learning_rate is None  # each family its own default
    assert auto.selection.metric == "auto" and auto.calibration.method == "auto"
    assert parse_config(config_to_dict(auto)) == auto
    for family, rate in (("mlp", 0.001), ("logistic", 0.01), ("ensemble", 0.001)):  # at 128 rows a batch
        raw = {"name": "x", "data": {"train": "t.csv"}, "model": {"type": family}, "training": {"batch_size": 128}}
        pinned = parse_config(raw)
        assert pinned.families == (family,) and pinned.training.learning_rate == rate
    ngram = parse_config({"name": "x", "data": {"train": "t.csv"}, "model": {"type": "ngram"}})
    assert ngram.families == ("ngram",)


def test_batch_size_defaults_to_the_family_and_the_rate_grows_with_it():
    def training(model: dict, **given):
        return parse_config({"name": "x", "data": {"train": "t.csv"}, "model": model, "training": given}).training

    # a dense family's batch depends on the training rows: both stay empty until training
    assert (training({}).batch_size, training({"type": "mlp"}).learning_rate) == (None, None)
    assert (default_batch_size("mlp", 15_100), default_batch_size("ensemble", 8191)) == (512, 128)
    assert (default_batch_size("ngram", 15_100), training({"type": "ngram"}).batch_size) == (128, 128)
    assert training({"type": "ngram"}).learning_rate == 0.01
    assert training({"type": "mlp"}, batch_size=32).learning_rate == 0.001  # never below the 128-row rate
    assert training({"type": "mlp"}, batch_size=2048).learning_rate == 0.004  # sqrt(2048 / 128) = 4
    assert default_learning_rate("logistic", 512) == 0.02
    assert training({"type": "mlp"}, batch_size=512, learning_rate=0.5).learning_rate == 0.5  # as given
    # the large-split recipe: stop on falls > 0.003 and cut the rate on a stall; small splits keep
    # a constant rate and stop on any fall; a given value always wins
    assert large_split_recipe(training({}), 15_100) == (0.003, 2)
    assert large_split_recipe(training({}), 400) == (0.0, 0)
    given = training({}, early_stopping_min_delta=0.01, learning_rate_patience=0)
    assert large_split_recipe(given, 15_100) == (0.01, 0)
    spec = DenseSpec("logistic", (), "relu", 0.0, 1, None)
    assert (spec.for_rows(15_100).batch_size, spec.for_rows(15_100).learning_rate) == (512, 0.02)
    assert (spec.for_rows(400).batch_size, spec.for_rows(400).learning_rate) == (128, 0.01)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x", "data": {"train": "t.csv"}, "epochs": 3}, "unknown key(s) epochs"),
        ({"name": "x", "data": {"train": "t.csv"}, "training": {"epoch": 3}}, "unknown key(s) training.epoch"),
        (
            {"name": "x", "data": {"train": "t.csv"}, "training": {"epochs": "ten"}},
            "training.epochs: expected an integer",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "training": {"epochs": True}},
            "training.epochs: expected an integer",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"activation": "swish"}},
            "model.activation: must be one of",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"hidden_layers": 512}},
            "model.hidden_layers: expected a list",
        ),
        ({"name": "x", "data": {"train": "t.csv"}, "model": {"dropout": 1.5}}, "model.dropout must be in [0, 1)"),
        ({"name": "x", "data": {"train": 5}}, "data.train: expected one of"),
        ({"name": "x", "data": {"train": ["t.csv", 5]}}, "data.train[1]: expected one of"),
        ({"name": "x", "data": {"train": {"model": "m", "tenant": 3}}}, "data.train.tenant: expected a string"),
        (
            {"name": "x", "data": {"train": ["t.csv", {"qurey": "SELECT 1"}]}},
            "unknown key(s) data.train[1].qurey; allowed: data.train[1].query",
        ),
        ({"name": "x", "data": {"train": "t.csv", "test": {"model": "m"}}}, "data.test: expected one of"),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"ngram_range": [1]}},
            "model.ngram_range: expected 2 values",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"ngram_buckets": 512}},
            "model.ngram_buckets does not apply to model.type 'auto'",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"type": "mlp", "ngram_buckets": 512}},
            "model.ngram_buckets does not apply to model.type 'mlp'",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"type": "logistic", "hidden_layers": [64]}},
            "model.hidden_layers does not apply to model.type 'logistic'",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"type": "mlp", "ensemble_members": 5}},
            "model.ensemble_members does not apply to model.type 'mlp'",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"ensemble_members": 1}},
            "model.ensemble_members must be >= 2",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"ensemble_members": 5}},
            "model.ensemble_members applies only when selection.candidates lists 'ensemble'",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "selection": {"candidates": ["mlp", "mlp"]}},
            "selection.candidates must name at least one family, each once",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "selection": {"candidates": []}},
            "selection.candidates must name at least one family, each once",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "selection": {"candidates": ["mlp", "ngram"]}},
            "selection.candidates[1]: must be one of 'mlp', 'logistic', 'ensemble', got 'ngram'",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"type": "mlp"}, "selection": {"candidates": ["mlp"]}},
            "selection.candidates does not apply to model.type 'mlp' (only 'auto' chooses)",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"features": "layers-6-4"}},
            "model.features must be 'sentence' or 'layers-A-B'",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "model": {"type": "ngram", "features": "sentence"}},
            "model.features does not apply to model.type 'ngram'",
        ),
        ({"name": "x", "data": {"train": "t.csv"}, "model": {"type": "linear"}}, "model.type: must be one of"),
        (
            {"name": "x", "data": {"train": "t.csv"}, "selection": {"metric": "f1"}},
            "selection.metric: must be one of 'auto', 'accuracy'",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "calibration": {"method": "isotonic"}},
            "calibration.method: must be one of 'auto', 'temperature', 'temperature_reject_shift', 'none'",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "selection": {"ensemble_margin": -0.1}},
            "selection.ensemble_margin must be >= 0",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "training": {"early_stopping_min_delta": -1.0}},
            "training.early_stopping_min_delta must be >= 0",
        ),
        (
            {"name": "x", "data": {"train": "t.csv"}, "training": {"learning_rate_patience": -1}},
            "training.learning_rate_patience must be >= 0",
        ),
        ({"data": {"train": "t.csv"}}, "missing required key name"),
        ({"name": "x"}, "missing required key data"),
    ],
)
def test_bad_configs_name_the_key(raw, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert message in str(caught.value)


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\ndata: {train: t.csv}\nthreshhold: {}\n")
    with pytest.raises(ConfigError, match="typo.yaml: unknown key"):
        load_config(typo)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
