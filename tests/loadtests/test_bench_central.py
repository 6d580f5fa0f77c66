"""The central-vs-standalone benchmark: its figures (memory readings, the fit rule, medians,
ratios, the table) without a process, and one real standalone classifier on a quick head."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from embedder.errors import InvalidInput
from heads.registry import ModelStore
from loadtests.bench_central import parse_ns
from loadtests.bench_central_report import Fit, median_runs, point_table, ratios
from loadtests.closed_loop import ClosedLoop, Endpoint
from loadtests.procfs import (
    GIB,
    MIB,
    Memory,
    memory_of,
    parse_meminfo,
    parse_schedstat,
    parse_smaps_rollup,
    proc_run_seconds,
)
from loadtests.stack import BASE_MODEL, ensure_base_model
from loadtests.standalone_classifier import StandaloneProcess, parse_request

SMAPS_ROLLUP = """\
56292c43f000-7fffb685a000 ---p 00000000 00:00 0                          [rollup]
Rss:              751432 kB
Pss:              500612 kB
Pss_Dirty:        374000 kB
Pss_Anon:         373900 kB
Pss_File:         126712 kB
Pss_Shmem:             0 kB
Shared_Clean:     376400 kB
Shared_Dirty:          0 kB
Private_Clean:       932 kB
Private_Dirty:    374100 kB
Referenced:       751432 kB
Anonymous:        373900 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
"""


def test_smaps_rollup_gives_rss_pss_private_and_shared_in_bytes():
    memory = parse_smaps_rollup(SMAPS_ROLLUP)
    assert memory == Memory(
        rss=751432 * 1024, pss=500612 * 1024, private=(932 + 374100) * 1024, shared=376400 * 1024, processes=1
    )
    assert memory.mib() == {
        "rss_mib": 733.8,
        "pss_mib": 488.9,
        "private_mib": 366.2,
        "shared_mib": 367.6,
        "processes": 1,
    }


def test_memories_add_up_and_unreadable_processes_are_skipped():
    one = parse_smaps_rollup(SMAPS_ROLLUP)
    total = one + one + Memory()
    assert (total.rss, total.pss, total.processes) == (2 * one.rss, 2 * one.pss, 2)
    mine = memory_of([os.getpid(), 2**22 + 1])  # this process, and a pid that cannot exist
    assert mine.processes == 1 and mine.rss >= mine.pss > 0


def test_a_text_without_rss_is_not_an_smaps_rollup():
    with pytest.raises(ValueError, match="Rss"):
        parse_smaps_rollup("Private_Dirty: 12 kB\n")


def test_schedstat_run_time_in_seconds():
    assert parse_schedstat("1500000000 20000 7\n") == 1.5


def test_run_seconds_count_every_live_thread_of_a_process():
    # A thread that spins for 0.3 s of its own CPU time adds that much to the process's run time
    # (the scheduler's clock: exact, where utime/stime would be sampled at the tick) while it
    # lives; once it has ended, its time is no longer counted.
    spun, release = threading.Event(), threading.Event()

    def spin():
        started = time.thread_time()
        while time.thread_time() - started < 0.3:
            pass
        spun.set()
        release.wait()

    before = proc_run_seconds([os.getpid()])
    worker = threading.Thread(target=spin)
    worker.start()
    assert spun.wait(30)
    alive = proc_run_seconds([os.getpid()])
    release.set()
    worker.join()
    # join() returns once the thread's Python state is released, a moment before the kernel
    # removes the thread: until then /proc still lists it, with its time (seen under load in CI)
    task = Path(f"/proc/self/task/{worker.native_id}")
    deadline = time.monotonic() + 30
    while task.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not task.exists()
    assert alive - before >= 0.3
    assert proc_run_seconds([os.getpid()]) < alive - 0.25  # the ended thread took its time with it
    assert proc_run_seconds([2**22 + 12345]) == 0.0  # no such process


def test_meminfo_in_bytes():
    info = parse_meminfo("MemTotal:       24683520 kB\nMemAvailable:   23029760 kB\nHugePages_Total:       0\n")
    assert info == {"MemTotal": 24683520 * 1024, "MemAvailable": 23029760 * 1024}


def test_n_copies_fit_when_n_times_rss_leaves_the_margin_free():
    per_process = Memory(rss=800 * MIB, pss=500 * MIB, private=400 * MIB, shared=400 * MIB, processes=1)
    fits = Fit(21, per_process, available=20 * GIB, margin=2 * GIB)
    assert fits.needed == 21 * 800 * MIB and fits.fits  # 16.4 GiB <= 18 GiB
    assert not Fit(24, per_process, available=20 * GIB, margin=2 * GIB).fits  # 18.75 GiB > 18 GiB
    big = Fit(100, per_process, available=20 * GIB, margin=2 * GIB)
    assert not big.fits
    assert big.message().startswith(
        "does not fit: needs ~78.1 GiB (100 x 800 MiB measured), machine has 20.0 GiB available"
    )
    assert "~39.5 GiB if the copies share their libraries (100 x 400 MiB private + 400 MiB shared)" in big.message()
    assert big.to_dict()["needed_gib"] == 78.12 and big.to_dict()["fits"] is False


def test_repeats_keep_medians_sum_counts_and_pool_error_samples():
    runs = [
        {"texts_per_s": 100.0, "p99_ms": 50.0, "ok": 1000, "errors": 1, "error_samples": ["a"], "cpu": {"x": 1.0}},
        {"texts_per_s": 120.0, "p99_ms": None, "ok": 1200, "errors": 0, "error_samples": [], "cpu": {"x": 3.0}},
        {"texts_per_s": 90.0, "p99_ms": 70.0, "ok": 900, "errors": 2, "error_samples": ["b", "c"], "cpu": {"x": 2.0}},
    ]
    assert median_runs(runs) == {
        "texts_per_s": 100.0,
        "p99_ms": 60.0,  # the median of the runs that have one
        "ok": 3100,
        "errors": 3,
        "error_samples": ["a", "b", "c"],
        "cpu": {"x": 2.0},
    }


def _load(texts_per_s, ms_per_text, errors=0):
    return {
        "texts_per_s": texts_per_s,
        "p50_ms": 40.0,
        "p99_ms": 90.0,
        "ok": int(texts_per_s * 10),
        "errors": errors,
        "error_samples": [],
        "service_cpu_ms_per_text": ms_per_text,
        "cpu": {"service_cores": 1.8, "client_cores": 0.2, "other_cores": 0.1},
    }


def _mib(rss, pss, processes):
    return {"rss_mib": rss, "pss_mib": pss, "private_mib": 0, "shared_mib": 0, "processes": processes}


CENTRAL = {
    "memory": {"total": _mib(1000.0, 800.0, 4), "postgres": _mib(60.0, 20.0, 6)},
    "load": _load(150.0, 12.0),
}


def test_ratios_and_table_of_a_measured_point():
    per_process = Memory(rss=750 * MIB, pss=500 * MIB, private=380 * MIB, shared=370 * MIB, processes=1)
    standalone = {
        "fits": True,
        "fit": Fit(3, per_process, 20 * GIB, 2 * GIB).to_dict(),
        "memory": {"total": _mib(2250.0, 1600.0, 3)},
        "load": _load(100.0, 18.0, errors=2),
    }
    r = ratios(CENTRAL, standalone)
    assert r == {
        "memory_rss_b_over_a": 2.25,
        "memory_pss_b_over_a": 2.0,
        "throughput_a_over_b": 1.5,
        "cpu_ms_per_text_b_over_a": 1.5,
    }
    table = point_table({"n": 3, "central": CENTRAL, "standalone": standalone, "ratios": r})
    lines = table.splitlines()
    assert lines[0] == "N = 3 heads"
    assert any(line.startswith("memory RSS, MiB") and line.endswith("b/a 2.25") for line in lines)
    assert any(line.startswith("cache-miss texts/s") and "150.0" in line and line.endswith("a/b 1.5") for line in lines)
    assert any(line.startswith("errors / requests") and "0/1500" in line and "2/1002" in line for line in lines)
    assert "PostgreSQL (not in the ratios): RSS 60.0 MiB" in table
    assert "(b) fits: needs ~2.2 GiB (3 x 750 MiB measured)" in table


def test_a_point_that_does_not_fit_shows_the_computed_figure_and_no_throughput():
    per_process = Memory(rss=750 * MIB, pss=500 * MIB, private=380 * MIB, shared=370 * MIB, processes=1)
    fit = Fit(100, per_process, 20 * GIB, 2 * GIB)
    standalone = {"fits": False, "fit": fit.to_dict()}
    r = ratios(CENTRAL, standalone)
    assert r["throughput_a_over_b"] is None and r["memory_rss_b_over_a"] is None
    assert r["memory_rss_b_over_a_projected"] == 75.0  # 100 x 750 MiB against 1000 MiB
    table = point_table({"n": 100, "central": CENTRAL, "standalone": standalone, "ratios": r})
    assert "(b) does not fit: needs ~73.2 GiB (100 x 750 MiB measured), machine has 20.0 GiB available" in table
    assert "(b) projected RSS b/a 75.0" in table
    texts_row = next(line for line in table.splitlines() if line.startswith("cache-miss texts/s"))
    assert texts_row.split()[-1] == "-"


def test_the_list_of_n():
    assert parse_ns("3,21,100") == [3, 21, 100]
    for bad in ("", "0", "3,-1"):
        with pytest.raises(ValueError):
            parse_ns(bad)


def test_a_predict_body_is_one_text():
    assert parse_request(b'{"text": "hello"}') == "hello"
    for bad in (b"not json", b'{"texts": ["a"]}', b'{"text": 3}', b'{"text": "a", "top_k": 2}', b"[]"):
        with pytest.raises(InvalidInput, match="body must be") as caught:
            parse_request(bad)
        assert caught.value.status == 422


# --- one real standalone classifier ------------------------------------------------------------------


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """A quick lt-intents head trained with the encoder in-process (as the load-test stack trains
    it, on a small CLINC150 cut), served by one standalone classifier with its own encoder."""
    base = tmp_path_factory.mktemp("standalone")
    store = ModelStore.for_tenant(base / "models", "loadtest")
    ensure_base_model(store, "", work=base / "train", logs=base, quick=True)  # "": no embedder, in-process
    with StandaloneProcess(store.root, BASE_MODEL, log_path=base / "standalone.log") as process:
        yield process, store.load(BASE_MODEL)


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_a_standalone_classifier_answers_with_a_label_of_its_head(standalone):
    process, head = standalone
    assert process.ready["model"] == BASE_MODEL and process.ready["version"] == head.version
    status, body = _post(process.url + "/predict", json.dumps({"text": "what is my account balance"}).encode())
    assert status == 200, body
    assert body["model"] == BASE_MODEL and body["version"] == head.version
    assert body["label"] in head.labels and 0 < body["probability"] <= 1
    assert _post(process.url + "/predict", b'{"text": "   "}')[0] == 422
    assert _post(process.url + "/predict", b"{")[0] == 422
    assert _post(process.url + "/nowhere", b"{}")[0] == 404


@pytest.mark.slow
def test_the_closed_loop_client_sends_never_seen_texts_and_counts_answers(standalone):
    process, _ = standalone
    with ClosedLoop([Endpoint.parse(process.url + "/predict")], concurrency=4, salt=1) as load:
        time.sleep(0.5)
        t0 = time.monotonic()
        time.sleep(1.5)
        t1 = time.monotonic()
    stats = load.stats(t0, t1)
    assert stats.ok > 0 and stats.errors == 0 and stats.error_samples == ()
    assert stats.texts_per_s == pytest.approx(stats.ok / 1.5, rel=0.05)
    assert 0 < stats.percentile_ms(50) <= stats.percentile_ms(99)
