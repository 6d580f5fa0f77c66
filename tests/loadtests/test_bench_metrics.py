"""The /metrics benchmark on a small N: real multiprocess metric files, rendered as /metrics does."""

from loadtests.bench_metrics import measure


def test_each_model_adds_three_series():
    small, large = measure(20, 2, 1), measure(60, 2, 1)
    # requests by status, the summed latency and the texts by version and role; the latency
    # histograms are per tenant, so the models add none of their 17 series each.
    assert (large["lines"] - small["lines"]) / 40 == 3
    assert large["page_bytes"] > small["page_bytes"] > 0
    assert large["files_bytes"] > 0 and large["render_cpu_s"] >= 0
