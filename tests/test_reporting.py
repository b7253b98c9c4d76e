"""Unit tests for ``pytest_isolate.reporting``."""

from __future__ import annotations

import os
import resource
import signal
import time
from collections.abc import Callable

import pytest

from conftest import reap
from pytest_isolate.cgroups import Usage
from pytest_isolate.reporting import (
    PROPERTY_PREFIX,
    TOP_KEPT,
    Record,
    Stats,
    describe_exit,
    format_bytes,
    format_seconds,
    oom_text,
    pids_text,
    signal_name,
)
from pytest_isolate.spec import IsolationSpec

MiB = 2**20


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "unknown"),
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024 * 1024 - 1, "1.0 MiB"),
        (MiB, "1.0 MiB"),
        (128 * MiB, "128.0 MiB"),
        (int(1.25 * 2**30), "1.2 GiB"),
        (2**30, "1.0 GiB"),
        (2**40, "1024.0 GiB"),
        (5 * 2**40, "5120.0 GiB"),
    ],
)
def test_format_bytes(n: int | None, text: str) -> None:
    assert format_bytes(n) == text


def test_format_seconds() -> None:
    assert format_seconds(2.5) == "2.5 s"
    assert format_seconds(10.0) == "10 s"
    assert format_seconds(0.001) == "0.001 s"


def test_signal_name() -> None:
    assert signal_name(9) == "SIGKILL"
    assert signal_name(11) == "SIGSEGV"
    assert signal_name(0) == "signal 0"
    assert signal_name(200) == "signal 200"


# -- describe_exit with real wait statuses -------------------------------------------------------


def _status_of(child: Callable[[], None]) -> int:
    """Fork, run ``child`` there (it must not return), reap it, return the wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            child()
        finally:
            os._exit(99)
    return reap(pid)


def _exit_3() -> None:  # pragma: no cover - the child
    os._exit(3)


def _exit_0() -> None:  # pragma: no cover - the child
    os._exit(0)


def _segv() -> None:  # pragma: no cover - the child
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file, no "(core dumped)"
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(5)


def _kill_9() -> None:  # pragma: no cover - the child
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(5)


def test_describe_exit_status() -> None:
    assert describe_exit(_status_of(_exit_3)) == "exited with status 3"
    assert describe_exit(_status_of(_exit_0)) == "exited with status 0"


def test_describe_exit_segv() -> None:
    assert describe_exit(_status_of(_segv)) == "was killed by signal 11 (SIGSEGV)"


def test_describe_exit_sigkill() -> None:
    assert describe_exit(_status_of(_kill_9)) == "was killed by signal 9 (SIGKILL)"


def test_describe_exit_synthetic_statuses() -> None:
    assert describe_exit(None) == "did not exit"
    assert describe_exit(3 << 8) == "exited with status 3"
    assert describe_exit(signal.SIGABRT | 0x80) == "was killed by signal 6 (SIGABRT) (core dumped)"
    stopped = (signal.SIGSTOP << 8) | 0x7F
    assert describe_exit(stopped) == f"ended with wait status {stopped}"


# -- Record.properties ---------------------------------------------------------------------------

FULL_USAGE = Usage(
    cpu_user=1.23456789,
    cpu_system=0.5,
    peak_mem=64 * MiB,
    oom_kills=1,
    nr_throttled=12,
    throttled=0.1234567,
    peak_pids=7,
    pids_limit_hits=2,
)


def test_record_properties_all() -> None:
    record = Record("t.py::test_a", 2.0000004, FULL_USAGE, IsolationSpec(mem=64 * MiB))
    assert PROPERTY_PREFIX == "isolate_"
    assert record.properties() == [
        ("isolate_wall_s", 2.0),
        ("isolate_cpu_user_s", 1.234568),
        ("isolate_cpu_system_s", 0.5),
        ("isolate_peak_mem_bytes", 67108864),
        ("isolate_oom_kills", 1),
        ("isolate_throttled_s", 0.123457),
        ("isolate_nr_throttled", 12),
        ("isolate_peak_pids", 7),
        ("isolate_pids_limit_hits", 2),
    ]


def test_record_properties_skip_unknown() -> None:
    record = Record("t.py::test_b", 0.5, Usage(), IsolationSpec())
    assert record.properties() == [
        ("isolate_wall_s", 0.5),
        ("isolate_cpu_user_s", 0.0),
        ("isolate_cpu_system_s", 0.0),
        ("isolate_oom_kills", 0),
        ("isolate_throttled_s", 0.0),
        ("isolate_nr_throttled", 0),
        ("isolate_pids_limit_hits", 0),
    ]
    assert record.event == ""


# -- texts ---------------------------------------------------------------------------------------


def test_oom_text() -> None:
    assert oom_text(IsolationSpec(mem=64 * MiB), Usage(peak_mem=64 * MiB - 4096)) == (
        "out of memory: the cgroup memory limit is 64.0 MiB (mem=67108864), peak usage 64.0 MiB"
    )
    assert oom_text(IsolationSpec(mem=None), Usage()) == (
        "out of memory: the cgroup memory limit is unknown (mem=None), peak usage unknown"
    )


def test_pids_text() -> None:
    assert pids_text(IsolationSpec(pids=3), Usage(pids_limit_hits=2)) == (
        "pids limit hit: the sandbox may hold 3 processes and threads (pids=3); "
        "2 fork(s) were refused with EAGAIN"
    )


# -- Stats.summary_lines -------------------------------------------------------------------------


def test_summary_empty() -> None:
    assert Stats().summary_lines() == []


def test_summary_lines_with_events() -> None:
    stats = Stats()
    oom_usage = Usage(cpu_user=0.2, cpu_system=0.05, peak_mem=64 * MiB, oom_kills=1)
    forky_usage = Usage(cpu_system=0.1, peak_mem=None, pids_limit_hits=4)
    records = [
        Record("t.py::test_small", 0.1, Usage(cpu_user=0.01, peak_mem=2 * MiB), IsolationSpec()),
        Record("t.py::test_oom", 0.3, oom_usage, IsolationSpec(mem=64 * MiB), "oom"),
        Record("t.py::test_slow", 2.0, Usage(cpu_user=1.5, peak_mem=10 * MiB),
               IsolationSpec(timeout=2.0), "timeout"),
        Record("t.py::test_forky", 0.2, forky_usage, IsolationSpec(pids=8)),
        Record("t.py::test_crash", 0.05, Usage(cpu_user=0.001, peak_mem=3 * MiB),
               IsolationSpec(), "crash"),
    ]  # fmt: skip
    for record in records:
        stats.add(record)
    assert stats.count == 5
    assert stats.summary_lines() == [
        "5 tests isolated",
        "top peak memory:",
        "    64.0 MiB  t.py::test_oom",
        "    10.0 MiB  t.py::test_slow",
        "     3.0 MiB  t.py::test_crash",
        "top CPU time:",
        "     1.500 s  t.py::test_slow",
        "     0.250 s  t.py::test_oom",
        "     0.100 s  t.py::test_forky",
        "events:",
        "  OOM kill (1x, limit 64.0 MiB): t.py::test_oom",
        "  timeout after 2 s: t.py::test_slow",
        "  pids limit 8 hit: t.py::test_forky",
        "  crashed: t.py::test_crash",
    ]
    assert len(stats.summary_lines(top=1)) == 1 + 2 + 2 + 1 + 4
    assert stats.summary_lines(top=1)[2] == "    64.0 MiB  t.py::test_oom"


def test_summary_without_memory_figures_or_events() -> None:
    stats = Stats()
    stats.add(Record("a.py::test_x", 0.1, Usage(cpu_user=0.004), IsolationSpec()))
    assert stats.summary_lines() == [
        "1 test isolated",
        "top CPU time:",
        "     0.004 s  a.py::test_x",
    ]


def test_stats_memory_stays_bounded_and_keeps_the_top() -> None:
    stats = Stats()
    for i in range(1000):
        usage = Usage(cpu_user=(i * 7919 % 1000) / 1000, peak_mem=(i * 104729 % 1000) * MiB)
        stats.add(Record(f"t.py::test_{i}", 0.1, usage, IsolationSpec()))
    assert stats.count == 1000
    assert len(stats.by_mem) <= TOP_KEPT and len(stats.by_cpu) <= TOP_KEPT
    lines = stats.summary_lines(top=2)
    assert lines[0] == "1000 tests isolated"
    assert lines[2:4] == ["   999.0 MiB  t.py::test_631", "   998.0 MiB  t.py::test_262"]
    assert lines[5:7] == ["     0.999 s  t.py::test_321", "     0.998 s  t.py::test_642"]
    assert Stats().by_mem is not stats.by_mem
