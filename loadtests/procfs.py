"""What processes and the machine use, read from /proc: CPU seconds and memory (RSS, PSS).

Free of Locust and gevent, so threaded benchmarks and the Locust runner share it. The parsers
take the file's text, so they are tested without a process to read.

RSS counts every page a process maps, shared ones in full: N processes that map the same
TensorFlow libraries count them N times. PSS divides each shared page among the processes that
map it, so a sum of PSS is what a set of processes really costs the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
GIB = 1 << 30


def proc_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (their own threads; a process that is gone
    counts 0)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError, OSError):
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    return total


def parse_schedstat(text: str) -> float:
    """Seconds a thread has run, from its /proc/<pid>/task/<tid>/schedstat ("run_ns wait_ns slices")."""
    return int(text.split()[0]) / 1e9


def proc_run_seconds(pids: list[int]) -> float:
    """Seconds the live threads of these processes have run, by the scheduler's nanosecond clock.

    `proc_cpu_seconds` comes from utime and stime, which the kernel counts by sampling at its
    tick: a thread that runs 20 microseconds per wake-up is charged a whole tick or nothing, so
    short windows of nearly idle processes read noisily. This is exact, for the threads alive at
    the reading (a thread that ended in between takes its time with it)."""
    total = 0.0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                total += parse_schedstat((task / "schedstat").read_text())
            except (OSError, ValueError, IndexError):
                continue
    return total


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLK_TCK


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


@dataclass(frozen=True)
class Memory:
    """Bytes of memory of one process or the sum over several."""

    rss: int = 0
    pss: int = 0
    private: int = 0  # Private_Clean + Private_Dirty: pages no other process maps
    shared: int = 0  # Shared_Clean + Shared_Dirty: pages other processes map too (counted whole)
    processes: int = 0

    def __add__(self, other: Memory) -> Memory:
        return Memory(
            self.rss + other.rss,
            self.pss + other.pss,
            self.private + other.private,
            self.shared + other.shared,
            self.processes + other.processes,
        )

    def mib(self) -> dict[str, float | int]:
        return {
            "rss_mib": round(self.rss / MIB, 1),
            "pss_mib": round(self.pss / MIB, 1),
            "private_mib": round(self.private / MIB, 1),
            "shared_mib": round(self.shared / MIB, 1),
            "processes": self.processes,
        }


def _kib_fields(text: str) -> dict[str, int]:
    """{'Rss': bytes, ...} from lines like 'Rss:   123456 kB' (other lines are ignored)."""
    out = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * 1024
    return out


def parse_smaps_rollup(text: str) -> Memory:
    """The Memory of one process from the text of /proc/<pid>/smaps_rollup."""
    f = _kib_fields(text)
    if "Rss" not in f or "Pss" not in f:
        raise ValueError("not an smaps_rollup text: no Rss or Pss line")
    return Memory(
        rss=f["Rss"],
        pss=f["Pss"],
        private=f.get("Private_Clean", 0) + f.get("Private_Dirty", 0),
        shared=f.get("Shared_Clean", 0) + f.get("Shared_Dirty", 0),
        processes=1,
    )


def process_memory(pid: int) -> Memory | None:
    """None when the process is gone or its smaps_rollup cannot be read (another user's)."""
    try:
        return parse_smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
    except (OSError, ValueError):
        return None


def memory_of(pids: list[int]) -> Memory:
    """The sum over the processes that could be read."""
    total = Memory()
    for pid in pids:
        found = process_memory(pid)
        if found is not None:
            total += found
    return total


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as {'MemTotal': bytes, 'MemAvailable': bytes, ...}."""
    return _kib_fields(text)


def meminfo() -> dict[str, int]:
    return parse_meminfo(Path("/proc/meminfo").read_text())
