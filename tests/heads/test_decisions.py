import json
import threading

from heads.decisions import decisions_path, read_decisions, record_decision


def test_decisions_append_in_order_and_read_back(tmp_path):
    assert read_decisions(tmp_path) == []
    first = record_decision(
        tmp_path, kind="gate", version="v1", outcome="refused", reason="too few items", evidence={"n": 3}
    )
    record_decision(tmp_path, kind="auto_rollback", version="v2", outcome="rolled_back", reason="error rate 0.4")
    got = read_decisions(tmp_path)
    assert [d["version"] for d in got] == ["v1", "v2"]
    assert got[0] == first and got[0]["evidence"] == {"n": 3} and got[1]["evidence"] == {}
    assert [d["version"] for d in read_decisions(tmp_path, limit=1)] == ["v2"]


def test_a_torn_line_is_skipped_and_concurrent_writers_never_interleave(tmp_path):
    def write(n):
        for i in range(50):
            record_decision(tmp_path, kind="gate", version=f"w{n}-{i}", outcome="promoted", reason="x" * 500)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(decisions_path(tmp_path), "a") as f:
        f.write('{"kind": "gate", "vers')  # a crash mid-line
    got = read_decisions(tmp_path)
    assert len(got) == 200 and len({d["version"] for d in got}) == 200
    assert all(json.dumps(d) for d in got)
