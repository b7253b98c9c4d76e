"""Shared fixtures and capability markers for the pytest-isolate test suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Protocol

import pytest

IS_LINUX = sys.platform == "linux"
IS_ROOT = IS_LINUX and os.geteuid() == 0
HAS_CGROUP_V1 = IS_LINUX and all(
    os.path.isdir(f"/sys/fs/cgroup/{c}") and os.access(f"/sys/fs/cgroup/{c}", os.W_OK)
    for c in ("cpu", "cpuacct", "memory", "pids")
)


def _has_cgroup_v2() -> bool:
    """Root on a host where cgroup v2 is the backend, with cpu, memory and pids enabled."""
    if not IS_ROOT:
        return False
    from pytest_isolate.cgroups.detect import detect

    backend = detect()
    return (
        backend is not None
        and backend.version == 2
        and backend.controllers >= {"cpu", "memory", "pids"}
    )


HAS_CGROUP_V2 = _has_cgroup_v2()

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root on Linux (namespaces, mounts)")
needs_cgroup_v1 = pytest.mark.skipif(
    not (IS_ROOT and HAS_CGROUP_V1), reason="needs writable cgroup v1 cpu/cpuacct/memory/pids"
)

needs_cgroup_v2 = pytest.mark.cgroup_v2
"""Needs a cgroup v2 host (``.ci/v2-guest`` boots one): ``-m cgroup_v2`` selects these
tests, and elsewhere they skip."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cgroup_v2: needs root and cgroup v2 with cpu, memory and pids (skips elsewhere)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if HAS_CGROUP_V2:
        return
    skip = pytest.mark.skip(reason="needs root and cgroup v2 with cpu, memory and pids enabled")
    for item in items:
        if item.get_closest_marker("cgroup_v2") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_random_order_in_inner_runs(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pytest these tests start, however they start it, runs its tests in file order.

    pytest-randomly (a test extra) would otherwise shuffle the inner runs whose output the
    tests match line by line. ``-p randomly`` on an inner command line enables it again.
    """
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")  # it clears PYTEST_ADDOPTS when it is set up
    addopts = os.environ.get("PYTEST_ADDOPTS", "")
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{addopts} -p no:randomly".strip())


class RunPytest(Protocol):
    def __call__(self, *args: str, timeout: float = ...) -> pytest.RunResult: ...


def fork_bomb(pids: int) -> str:
    """An isolated test (needs ``os``, ``time`` and ``pytest`` imported) that forks until
    the pids cap refuses, then fails saying after how many children."""
    return f"""
@pytest.mark.isolated(pids={pids})
def test_fork_bomb():
    children = []
    try:
        while True:
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
    except BlockingIOError:
        pass
    assert len(children) < {pids}
    raise AssertionError(f"fork refused after {{len(children)}} children")
"""


@pytest.fixture
def run(pytester: pytest.Pytester) -> RunPytest:
    """Run pytest in a subprocess (never fork the outer pytest) with -p no:cacheprovider.

    pytest-randomly, a test extra, is disabled too (``-p randomly`` in ``args`` enables it).
    """

    def _run(*args: str, timeout: float = 120) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-p", "no:randomly", *args, timeout=timeout
        )

    return _run


def run_script(script: str) -> str:
    """Run Python ``script`` (dedented) in a subprocess, for steps that change the calling
    process (never pytest's own); fail unless it exits 0; its stdout, stripped."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def reap(pid: int, timeout: float = 10.0) -> int:
    """Wait for a child this test forked; SIGKILL it and fail if it outlives ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not exit within {timeout} s")
        time.sleep(0.002)


def write_stat(
    proc: Path, pid: int, starttime: int | str, comm: str = "python3", state: str = "S"
) -> None:
    """A fake ``<proc>/<pid>/stat``: the fields owner tokens read."""
    # Fields 3.. of /proc/PID/stat; field 3 is the state, field 22 the start time.
    rest = [state, *map(str, range(4, 22)), str(starttime), *map(str, range(23, 53))]
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)}\n")
