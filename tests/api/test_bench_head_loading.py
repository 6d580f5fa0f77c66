"""loadtests/bench_head_loading.py on a small store: it loads every serving model, with the record
of verified weights and without it, and reports what it timed."""

import json

from loadtests import bench_head_loading


def test_every_serving_model_loads_in_each_kind_of_round(store, capsys):
    assert bench_head_loading.main(["--store", str(store.root.parent), "--rounds", "2", "--hash"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["models"] == len(store.models()) == 2  # intents and plain
    assert len(result["known_s"]) == len(result["hashed_s"]) == 2
    assert all(s > 0 for s in result["known_s"] + result["hashed_s"])
    assert result["median_known_ms_per_model"] > 0


def test_a_store_that_does_not_exist_is_named(tmp_path, capsys):
    try:
        bench_head_loading.main(["--store", str(tmp_path / "nowhere")])
    except SystemExit as exc:
        assert "make bench-scale" in str(exc)
    else:
        raise AssertionError("no error for a missing store")
