"""Usage -> report.user_properties, crash descriptions, and the terminal summary."""

from __future__ import annotations

import heapq
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from .cgroups import Usage
from .spec import IsolationSpec

PROPERTY_PREFIX = "isolate_"


def format_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if round(value, 1) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_seconds(s: float) -> str:
    return f"{s:g} s"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@dataclass(frozen=True)
class Record:
    """One isolated test's resource usage, as it goes into the report."""

    nodeid: str
    wall: float
    usage: Usage
    spec: IsolationSpec
    event: str = ""
    """"oom", "timeout", "crash" or "" (normal exit)."""

    def properties(self) -> list[tuple[str, object]]:
        u = self.usage
        props: list[tuple[str, object]] = [
            ("wall_s", round(self.wall, 6)),
            ("cpu_user_s", round(u.cpu_user, 6)),
            ("cpu_system_s", round(u.cpu_system, 6)),
            ("peak_mem_bytes", u.peak_mem),
            ("oom_kills", u.oom_kills),
            ("throttled_s", round(u.throttled, 6)),
            ("nr_throttled", u.nr_throttled),
            ("peak_pids", u.peak_pids),
            ("pids_limit_hits", u.pids_limit_hits),
        ]
        return [(PROPERTY_PREFIX + k, v) for k, v in props if v is not None]


def oom_text(spec: IsolationSpec, usage: Usage) -> str:
    return (
        f"out of memory: the cgroup memory limit is {format_bytes(spec.mem)} "
        f"(mem={spec.mem}), peak usage {format_bytes(usage.peak_mem)}"
    )


def pids_text(spec: IsolationSpec, usage: Usage) -> str:
    return (
        f"pids limit hit: the sandbox may hold {spec.pids} processes and threads "
        f"(pids={spec.pids}); "
        f"{usage.pids_limit_hits} fork(s) were refused with EAGAIN"
    )


def describe_exit(status: int | None) -> str:
    """'killed by signal 11 (SIGSEGV)' / 'exited with status 3'."""
    if status is None:
        return "did not exit"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"was killed by signal {sig} ({signal_name(sig)}){core}"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status}"


# The summary shows the top few; this many are kept, so that memory stays flat however
# many tests a session isolates.
TOP_KEPT = 10


@dataclass
class Stats:
    """Session-wide isolation figures for the terminal summary, in bounded memory."""

    count: int = 0
    by_mem: list[tuple[int, int, Record]] = field(default_factory=list)
    by_cpu: list[tuple[float, int, Record]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def add(self, record: Record) -> None:
        self.count += 1
        order = -self.count  # among equal figures, the earlier test ranks first
        usage = record.usage
        if usage.peak_mem is not None:
            _keep_top(self.by_mem, (usage.peak_mem, order, record))
        _keep_top(self.by_cpu, (usage.cpu_user + usage.cpu_system, order, record))
        self.events += _events(record)

    def summary_lines(self, top: int = 3) -> list[str]:
        if not self.count:
            return []
        n = self.count
        lines = [f"{n} test{'s' if n != 1 else ''} isolated"]
        by_mem = [r for _, _, r in sorted(self.by_mem, key=_rank, reverse=True)[:top]]
        if by_mem:
            lines.append("top peak memory:")
            lines += [f"  {format_bytes(r.usage.peak_mem):>10}  {r.nodeid}" for r in by_mem]
        by_cpu = [r for _, _, r in sorted(self.by_cpu, key=_rank, reverse=True)[:top]]
        lines.append("top CPU time:")
        lines += [f"  {r.usage.cpu_user + r.usage.cpu_system:>8.3f} s  {r.nodeid}" for r in by_cpu]
        events = self.events
        if events:
            lines.append("events:")
            lines += events
        return lines


def _rank(entry: tuple[float, int, Record]) -> tuple[float, int]:
    return entry[0], entry[1]


def _keep_top(heap: list[Any], entry: tuple[float, int, Record]) -> None:
    if len(heap) < TOP_KEPT:
        heapq.heappush(heap, entry)
    elif _rank(entry) > _rank(heap[0]):
        heapq.heapreplace(heap, entry)


def _events(r: Record) -> list[str]:
    events = []
    if r.usage.oom_kills:
        events.append(
            f"  OOM kill ({r.usage.oom_kills}x, limit {format_bytes(r.spec.mem)}): {r.nodeid}"
        )
    if r.event == "timeout":
        events.append(f"  timeout after {format_seconds(r.spec.timeout or 0)}: {r.nodeid}")
    if r.usage.pids_limit_hits:
        events.append(f"  pids limit {r.spec.pids} hit: {r.nodeid}")
    if r.event == "crash":
        events.append(f"  crashed: {r.nodeid}")
    return events
