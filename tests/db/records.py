"""PredictionRecords for tests."""

from __future__ import annotations

from inferencedb.prediction_record import PredictionRecord


def make_record(i: int, **overrides) -> PredictionRecord:
    fields = {
        "request_id": f"req-{i // 4}",
        "item_index": i % 4,
        "tenant": "default",
        "model": "intent-en",
        "version": "3",
        "input_text": f"can I change my delivery address? #{i}",
        "label": "change_address" if i % 3 else "oos",
        "probability": (i % 100) / 100,
        "top_k": [("change_address", 0.8), ("cancel_order", 0.15)],
        "embed_ms": 2.5,
        "head_ms": 0.1,
        "total_ms": 4.0,
        "cache_hit": bool(i % 2),
        "client_id": "tests",
        "embedding_model": "minilm-l6-v2",
    }
    fields.update(overrides)
    return PredictionRecord(**fields)
