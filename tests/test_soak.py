"""Soak: 2000 isolated tests in one session, checked from outside.

Slow (a minute or so), so not in the default run: ``pytest -m soak`` (CI runs it).
"""

from __future__ import annotations

import glob
import itertools
import json
import statistics
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import RunPytest, needs_cgroup_v1
from test_acceptance_lifecycle import _mounts, _owned_by, _processes_with

pytestmark = [pytest.mark.soak, needs_cgroup_v1]

N = 2000
WINDOW = 200
TIMED = 400  # tests per timing window: the first ones (after a warm-up) and the last ones
ATTEMPTS = 3
# Tests before the early window: imports, the first sandboxes, and the kernel's background
# teardown of the first sandboxes' namespaces getting going.
WARM_UP = 200

CONFTEST = """
import json, os, time

SAMPLES = []

def _fds():
    # Ready sandboxes come and go as a pidfd, their user namespace and cgroup join files:
    # not counted.
    out = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target != "anon_inode:[pidfd]" and not target.startswith("user:") and not (
            target.endswith("/tasks")
        ):
            out += 1
    return out

def _rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

import pytest

@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    # pytest keeps every report for its summary; keep one in their place (the counts stay
    # right), so that what is measured is everything else: pytest-isolate's part above all.
    reporter = _CONFIG.pluginmanager.get_plugin("terminalreporter")
    for kept in reporter.stats.values():
        if kept and kept[-1] is report:
            kept[-1] = _STAND_IN.setdefault(report.outcome, report)

_STAND_IN = {}

def pytest_configure(config):
    global _CONFIG
    _CONFIG = config

def _reference():
    # A fixed piece of pure Python, timed beside the tests: the machine's own speed at that
    # moment (a shared machine's speed drifts by 10-20% over a minute).
    start = time.perf_counter()
    total = 0
    for i in range(20000):
        total += i * i
    return time.perf_counter() - start

def pytest_runtest_logfinish(nodeid, location):
    # In pytest's own process: isolated tests log their reports here, in the parent.
    reference = _reference() if len(SAMPLES) % 5 == 0 else None
    SAMPLES.append((time.perf_counter(), _rss_kib(), _fds(), reference))

def pytest_sessionfinish(session):
    import psutil
    builders = [c.pid for c in psutil.Process().children()
                if "pytest_isolate.builder.main" in " ".join(c.cmdline())]
    with open("soak.json", "w") as f:
        json.dump({"samples": SAMPLES, "builders": builders}, f)
"""


def _quartile(values: list[float]) -> float:
    return statistics.quantiles(values, n=4)[0]


def _cost(window: list[list[float]]) -> float:
    """The lower quartile of the intervals between the tests of ``window``, over the median
    time of the reference workload run in that stretch."""
    intervals = [b[0] - a[0] for a, b in itertools.pairwise(window)]
    references = [s[3] for s in window if s[3] is not None]
    return _quartile(intervals) / statistics.median(references)


def _rss_growth(samples: list[list[float]]) -> float:
    """KiB the process grew from the end of the first window to the end."""
    return samples[-1][1] - samples[WINDOW][1]


def test_2000_isolated_tests_stay_flat(
    pytester: pytest.Pytester, run: RunPytest, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = f"1000.{uuid.uuid4().int % 10**12:012d}"
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        f"""
        import os, subprocess, pytest

        @pytest.mark.isolated
        @pytest.mark.parametrize("i", range({N}))
        def test_many(i):
            if i % 100 == 0 and os.environ.get("SOAK_LEAVE"):
                # now and then a daemon and a file, which must not outlive the test
                subprocess.Popen(["sleep", "{tag}"], start_new_session=True)
                open(f"/tmp/soak-{tag}-{{i}}", "w").write("x")
        """
    )
    # A plain run of the same tests is the baseline.
    run("-q", "-p", "no:randomly", "--no-isolate").assert_outcomes(passed=N)
    plain = json.loads((pytester.path / "soak.json").read_text())["samples"]
    mounts_before = _mounts()
    monkeypatch.setenv("SOAK_LEAVE", "1")
    # Per-test cost early (after the first tests, WARM_UP) and late in
    # the session: the lower quartile of the intervals between tests, what a test costs when
    # nothing else gets in the way, in units of the reference timed in the same stretch.
    # Growth (a leak, kernel objects piling up) shifts it in every session; the drift of a
    # shared machine within a minute, which the reference does not fully cancel, in one
    # session now and then: up to three sessions, each checked in full, must show it once.
    costs = []
    for _ in range(ATTEMPTS):
        result = run("-q", "-p", "no:randomly", timeout=1800)
        result.assert_outcomes(passed=N)
        data = json.loads((pytester.path / "soak.json").read_text())
        samples = data["samples"]
        assert len(samples) == N
        _check_nothing_left(data, tag, mounts_before)
        first, last = _cost(samples[WARM_UP : WARM_UP + TIMED]), _cost(samples[-TIMED:])
        print(f"per-test cost, in reference units: {first:.2f} -> {last:.2f}")
        costs.append((first, last))
        if last <= first * 1.10:
            break
    else:
        raise AssertionError(f"per-test cost grew by more than 10% in every session: {costs}")
    growth, plain_growth = _rss_growth(samples), _rss_growth(plain)
    fds = [s[2] for s in samples]
    print(f"RSS growth, {N - WINDOW} tests: {growth} KiB ({plain_growth} KiB without isolation)")
    print(f"fds {fds[WINDOW]} -> {fds[-1]}")
    assert growth - plain_growth < 1024, (growth, plain_growth)  # ours: flat
    assert max(fds[WINDOW:]) == fds[WINDOW], (fds[WINDOW], max(fds[WINDOW:]))


def _check_nothing_left(data: dict[str, Any], tag: str, mounts_before: list[str]) -> None:
    """Checked from outside: nothing of the run is left."""
    assert _processes_with(tag) == []
    assert _mounts() == mounts_before
    assert glob.glob(f"/tmp/soak-{tag}-*") == []
    (builder,) = data["builders"]
    assert _owned_by(builder) == []
    assert not Path(f"/proc/{builder}").exists()
