"""The monitoring report as files for people: report.json, one PNG per chart, and report.html.

    python -m heads report MODEL [--since D] [--until D] [--url http://router:8000] --out DIR

The numbers come from the router's GET /v1/models/<model>/report (--url), or are computed here
from DATABASE_URL and the model store with the same code (inferencedb/monitoring_report.py), with
the model's release decisions and serving history from the store (heads/release_history.py). Both
read the rows of --tenant; --url sends MANYHEADS_API_KEY as the Bearer token.
"""

from __future__ import annotations

import functools
import html
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from heads.errors import HeadsError
from heads.release_history import evidence_summary, release_history

BASELINE_BUCKETS = 10


def fetch_report(
    url: str,
    model: str,
    since: str | None,
    until: str | None,
    *,
    tenant: str,
    api_key: str | None,
    timeout_s: float = 30.0,
) -> dict:
    """The report from a running router. `api_key` is sent as a Bearer token (the router refuses
    without one when authentication is on); an operator key also names `tenant` (X-Tenant), a
    tenant key acts for its own tenant, which must be `tenant`."""
    query = urllib.parse.urlencode({k: v for k, v in (("since", since), ("until", until)) if v})
    headers = {"X-Tenant": tenant}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/models/{model}/report?{query}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"{}").get("error", {}).get("message", exc.reason)
        except ValueError:
            detail = exc.reason
        raise HeadsError(f"the router refused the report ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise HeadsError(f"cannot reach the router at {url}: {exc}") from None


def compute_report(dsn: str, store, model: str, since: str | None, until: str | None, *, tenant: str) -> dict:
    """The report computed here from the inference database, for `tenant` (whose models `store`
    holds): the same code as the router's endpoint."""
    from inferencedb.database import Database
    from inferencedb.errors import InferenceDbError
    from inferencedb.monitoring_report import build_report, parse_window

    database = Database(dsn, max_connections=1)
    try:
        start, end = parse_window(since, until)
        report = build_report(
            database, model, start, end, tenant=tenant, baseline_of=functools.partial(store.baseline, model)
        )
        return {**report, **release_history(store, model)}
    except InferenceDbError as exc:
        raise HeadsError(exc.message) from None
    finally:
        database.close()


def _shares(counts: dict) -> dict:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _charts(report: dict, baselines: dict[str, dict], out: Path) -> list[tuple[str, str]]:
    """(file name, caption) of every chart written."""
    plt = _pyplot()
    charts = []
    entries = report["versions"]
    if entries:
        fig, ax = plt.subplots(figsize=(8, 0.5 + 0.4 * len(entries)))
        names = [f"{e['version']} ({e['role']})" for e in entries]
        ax.barh(names, [e["volume"] for e in entries], color="#4c72b0", label="answered")
        ax.barh(names, [e["errors"] for e in entries], color="#c44e52", label="errors")
        ax.set_xlabel("predictions")
        ax.legend()
        fig.savefig(out / "volume.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        charts.append(("volume.png", "Predictions per version and role"))
    for i, entry in enumerate(entries):
        baseline = baselines.get(entry["version"], {})
        live, base = _shares(entry["label_distribution"]), _shares(baseline.get("label_distribution", {}))
        top = sorted(set(live) | set(base), key=lambda k: -max(live.get(k, 0), base.get(k, 0)))[:20]
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.6 + 0.28 * max(len(top), 5)))
        y = range(len(top))
        left.barh([p - 0.2 for p in y], [live.get(k, 0) for k in top], height=0.4, label="live")
        left.barh([p + 0.2 for p in y], [base.get(k, 0) for k in top], height=0.4, label="training")
        left.set_yticks(list(y), top, fontsize=8)
        left.invert_yaxis()
        left.set_title(
            f"labels (PSI {entry['drift']['label_psi'] if entry['drift']['label_psi'] is not None else 'n/a'})"
        )
        left.legend()
        conf_live = _shares({str(b): c for b, c in enumerate(entry["confidence_histogram"])})
        conf_base = _shares({str(b): c for b, c in enumerate(baseline.get("confidence_histogram", []))})
        xs = range(BASELINE_BUCKETS)
        right.bar([x - 0.2 for x in xs], [conf_live.get(str(x), 0) for x in xs], width=0.4, label="live")
        right.bar([x + 0.2 for x in xs], [conf_base.get(str(x), 0) for x in xs], width=0.4, label="validation")
        right.set_xticks(list(xs), [f"{x / 10:.1f}" for x in xs])
        right.set_xlabel("top probability (bucket lower edge)")
        right.set_title("confidence")
        right.legend()
        fig.suptitle(f"{report['model']} {entry['version']} ({entry['role']})")
        name = f"distributions-{i}.png"
        fig.savefig(out / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
        charts.append(
            (name, f"Label and confidence distributions of {entry['version']} ({entry['role']}) against training")
        )
    return charts


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_report(report: dict, baselines: dict[str, dict], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    charts = _charts(report, baselines, out)
    versions = _table(
        [
            [
                e["version"],
                e["role"],
                e["volume"],
                e["errors"],
                e["low_confidence_rate"],
                e["rejected_rate"],
                e["feedback"]["count"],
                e["feedback"]["accuracy"],
                e["drift"]["label_psi"],
                e["drift"]["confidence_psi"],
                e["drift"]["centroid_cosine_distance"],
            ]
            for e in report["versions"]
        ],
        [
            "version",
            "role",
            "volume",
            "errors",
            "low confidence",
            "rejected",
            "feedback",
            "accuracy on feedback",
            "label PSI",
            "confidence PSI",
            "centroid distance",
        ],
    )
    agreement = _table(
        [
            [a["answered_version"], a["shadow_version"], a["compared"], a["agreement_rate"]]
            for a in report["shadow_agreement"]
        ],
        ["answered by", "shadow", "compared", "agreement"],
    )
    decisions = _table(
        [
            [d.get("at"), d.get("kind"), d.get("version"), d.get("outcome"), d.get("reason"), evidence_summary(d)]
            for d in report.get("decisions", [])
        ],
        ["at", "kind", "version", "outcome", "reason", "evidence"],
    )
    history = _table(
        [
            [
                s.get("updated_at"),
                s.get("primary"),
                ", ".join(f"{x['version']} ({x['fraction']:g})" for x in s.get("shadows", [])),
                s["candidate"]["version"] + f" ({s['candidate']['percent']:g}%)" if s.get("candidate") else None,
                s.get("fallback"),
                s.get("reason"),
            ]
            for s in report.get("serving_history", [])
        ],
        ["since", "primary", "shadows", "A/B candidate", "fallback", "reason"],
    )
    images = "".join(
        f'<figure><img src="{name}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
        for name, c in charts
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(report["model"])} report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(report["model"])}</h1><p>{html.escape(report["since"])} to {html.escape(report["until"])}
(PSI above 0.2 is usually read as a significant shift, above 0.1 as worth a look)</p>
<h2>Versions</h2>{versions}<h2>Shadow agreement</h2>{agreement}
<h2>Release decisions</h2>{decisions}<h2>Serving history (the last row serves now)</h2>{history}
<h2>Charts</h2>{images}</body></html>"""
    (out / "report.html").write_text(page)
    return out / "report.html"
