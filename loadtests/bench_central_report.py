"""The figures of loadtests/bench_central.py: does (b) fit, medians of repeats, ratios, tables.

Pure functions of the measurements (dicts of numbers), so they are tested without a process.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from loadtests.closed_loop import ERROR_SAMPLES
from loadtests.procfs import GIB, MIB, Memory


@dataclass(frozen=True)
class Fit:
    """N copies of a process measured at `per_process`, against the memory available."""

    n: int
    per_process: Memory
    available: int  # MemAvailable before the first copy started, bytes
    margin: int  # bytes kept free

    @property
    def needed(self) -> int:
        """N x RSS: what N copies need if nothing they map is shared (the rule for starting)."""
        return self.n * self.per_process.rss

    @property
    def needed_if_shared(self) -> int:
        """N x private memory + the shared pages once: closer to the truth when the copies share
        TensorFlow's libraries (shown for information)."""
        return self.n * self.per_process.private + self.per_process.shared

    @property
    def fits(self) -> bool:
        return self.needed <= self.available - self.margin

    def message(self) -> str:
        p = self.per_process
        return (
            f"{'fits' if self.fits else 'does not fit'}: needs ~{self.needed / GIB:.1f} GiB "
            f"({self.n} x {p.rss / MIB:.0f} MiB measured), machine has {self.available / GIB:.1f} GiB available "
            f"(keeping {self.margin / GIB:.0f} GiB free); ~{self.needed_if_shared / GIB:.1f} GiB if the copies "
            f"share their libraries ({self.n} x {p.private / MIB:.0f} MiB private + {p.shared / MIB:.0f} MiB shared)"
        )

    def to_dict(self) -> dict:
        return {
            "fits": self.fits,
            "needed_mib": round(self.needed / MIB, 1),
            "needed_gib": round(self.needed / GIB, 2),
            "needed_if_shared_gib": round(self.needed_if_shared / GIB, 2),
            "per_process": self.per_process.mib(),
            "available_gib": round(self.available / GIB, 2),
            "margin_gib": round(self.margin / GIB, 2),
            "message": self.message(),
        }


SUMMED = ("ok", "errors")


def median_runs(runs: list[dict]) -> dict:
    """One figure per key over repeated runs: medians (of the runs that have one), counts
    summed, error samples pooled."""
    out: dict = {}
    for key, first in runs[0].items():
        values = [run[key] for run in runs]
        if key in SUMMED:
            out[key] = sum(values)
        elif isinstance(first, dict):
            out[key] = median_runs(values)
        elif isinstance(first, list):
            out[key] = [item for value in values for item in value][:ERROR_SAMPLES]
        else:
            present = [v for v in values if v is not None]
            out[key] = round(statistics.median(present), 2) if present else None
    return out


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def ratios(central: dict, standalone: dict) -> dict:
    """(b) / (a) for memory and CPU per text, (a) / (b) for throughput; None where (b) was not
    measured. When (b) does not fit, its memory is the projected N x RSS."""
    a_mem, a_load = central["memory"]["total"], central["load"]
    b_mem, b_load = standalone.get("memory", {}).get("total", {}), standalone.get("load", {})
    out = {
        "memory_rss_b_over_a": ratio(b_mem.get("rss_mib"), a_mem["rss_mib"]),
        "memory_pss_b_over_a": ratio(b_mem.get("pss_mib"), a_mem["pss_mib"]),
        "throughput_a_over_b": ratio(a_load["texts_per_s"], b_load.get("texts_per_s")),
        "cpu_ms_per_text_b_over_a": ratio(b_load.get("service_cpu_ms_per_text"), a_load["service_cpu_ms_per_text"]),
    }
    if "memory" not in standalone:
        out["memory_rss_b_over_a_projected"] = ratio(standalone["fit"]["needed_mib"], a_mem["rss_mib"])
    return out


def point_table(point: dict) -> str:
    """The comparison for one N, as text."""
    a, b, r = point["central"], point["standalone"], point["ratios"]
    a_mem, a_load = a["memory"]["total"], a["load"]
    b_mem, b_load = b.get("memory", {}).get("total", {}), b.get("load", {})

    def cell(value) -> str:
        return "-" if value is None else str(value)

    def row(name: str, x, y, note: str = "") -> str:
        return f"{name:<28} {cell(x):>14} {cell(y):>16}   {note}".rstrip()

    def errors(load: dict) -> str | None:
        return f"{load['errors']}/{load['ok'] + load['errors']}" if load else None

    def cores(load: dict) -> str | None:
        return f"{load['cpu']['service_cores']} / {load['cpu']['client_cores']}" if load else None

    def by(label: str, value: float | None) -> str:
        return f"{label} {value}" if value is not None else ""

    lines = [
        f"N = {point['n']} heads",
        f"{'':<28} {'(a) central':>14} {'(b) standalone':>16}   ratio",
        row("memory RSS, MiB", a_mem["rss_mib"], b_mem.get("rss_mib"), by("b/a", r["memory_rss_b_over_a"])),
        row("memory PSS, MiB", a_mem["pss_mib"], b_mem.get("pss_mib"), by("b/a", r["memory_pss_b_over_a"])),
        row("processes", a_mem["processes"], b_mem.get("processes")),
        row(
            "cache-miss texts/s", a_load["texts_per_s"], b_load.get("texts_per_s"), by("a/b", r["throughput_a_over_b"])
        ),
        row("p50 latency, ms", a_load["p50_ms"], b_load.get("p50_ms")),
        row("p99 latency, ms", a_load["p99_ms"], b_load.get("p99_ms")),
        row("errors / requests", errors(a_load), errors(b_load)),
        row("CPU cores service / client", cores(a_load), cores(b_load)),
        row(
            "service CPU ms per text",
            a_load["service_cpu_ms_per_text"],
            b_load.get("service_cpu_ms_per_text"),
            by("b/a", r["cpu_ms_per_text_b_over_a"]),
        ),
        row("other processes, cores", a_load["cpu"]["other_cores"], b_load.get("cpu", {}).get("other_cores")),
    ]
    pg = a["memory"]["postgres"]
    lines.append(
        f"PostgreSQL (not in the ratios): RSS {pg['rss_mib']} MiB, PSS {pg['pss_mib']} MiB, {pg['processes']} processes"
    )
    lines.append(f"(b) {b['fit']['message']}")
    if b.get("ran_out_while_starting"):
        lines.append(f"(b) not measured: {b['ran_out_while_starting']}")
    if r.get("memory_rss_b_over_a_projected"):
        lines.append(f"(b) projected RSS b/a {r['memory_rss_b_over_a_projected']} (N x RSS of one process)")
    return "\n".join(lines)
