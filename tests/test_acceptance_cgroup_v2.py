"""End to end on a cgroup v2 host: the caps are reported as on v1 (same texts, same
properties). Run in the guest of ``.ci/v2-guest``; they skip elsewhere.

Under emulation Python runs ~14x slower: these tests judge behaviour, never time.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from conftest import RunPytest, needs_cgroup_v2
from pytest_isolate.cgroups import PREFIX

pytestmark = needs_cgroup_v2

TIMEOUT = 600  # seconds for one inner pytest run, under emulation


def _owners() -> set[str]:
    """The run directories under ``/sys/fs/cgroup/pytest-isolate`` (one per live run)."""
    try:
        return {e.name for e in os.scandir(f"/sys/fs/cgroup/{PREFIX}") if e.is_dir()}
    except FileNotFoundError:
        return set()


def _properties(xml_path: str) -> dict[str, dict[str, str]]:
    root = ET.parse(xml_path).getroot()
    out = {}
    for case in root.iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        out[case.get("name", "")] = props
    return out


def test_v2_memory_cap_oom_kill_is_reported(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.isolated(mem="64M")
        def test_hog():
            print("allocating")
            data = bytearray(200 * 2**20)
            for i in range(0, len(data), 4096):
                data[i] = 1
        """
    )
    before = _owners()
    result = run("--junitxml=out.xml", timeout=TIMEOUT)
    assert _owners() <= before  # the run removed its cgroups
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*The isolated test was killed during call: out of memory: the cgroup memory limit "
            "is 64.0 MiB (mem=67108864), peak usage 6?.? MiB*",
            "*Captured stdout call*",
            "allocating",
            "*OOM kill (1x, limit 64.0 MiB): test_v2_memory_cap_oom_kill_is_reported.py::test_hog*",
        ]
    )
    props = _properties(str(pytester.path / "out.xml"))["test_hog"]
    assert props["isolate_oom_kills"] == "1"
    assert 60 * 2**20 <= int(props["isolate_peak_mem_bytes"]) <= 64 * 2**20


def test_v2_cpu_cap_throttles(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.mark.isolated(cpu=0.2)
        def test_busy():
            end = time.process_time() + 0.5
            while time.process_time() < end:
                pass
        """
    )
    result = run("--junitxml=out.xml", timeout=TIMEOUT)
    result.assert_outcomes(passed=1)
    busy = _properties(str(pytester.path / "out.xml"))["test_busy"]
    assert float(busy["isolate_cpu_user_s"]) + float(busy["isolate_cpu_system_s"]) >= 0.45, busy
    assert int(busy["isolate_nr_throttled"]) > 0, busy
    assert float(busy["isolate_throttled_s"]) > 0, busy


def test_v2_pids_cap_reports_the_limit_hit(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import os, time, pytest

        @pytest.mark.isolated(pids=8)
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
            raise AssertionError(f"fork refused after {len(children)} children")
        """
    )
    result = run("--junitxml=out.xml", timeout=TIMEOUT)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*fork refused after 7 children*",
            "*pids limit hit: the sandbox may hold 8 processes and threads (pids=8); "
            "* fork(s) were refused with EAGAIN*",
            "*pids limit 8 hit: *test_fork_bomb*",
        ]
    )
    props = _properties(str(pytester.path / "out.xml"))["test_fork_bomb"]
    assert int(props["isolate_pids_limit_hits"]) >= 1
    assert int(props["isolate_peak_pids"]) == 8
