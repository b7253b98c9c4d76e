"""End to end: cgroup caps (CPU, memory, pids), timeouts, and crashes become reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from conftest import RunPytest, fork_bomb, needs_cgroup_v1, needs_root


def _properties(xml_path: str) -> dict[str, dict[str, str]]:
    root = ET.parse(xml_path).getroot()
    out = {}
    for case in root.iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        out[case.get("name", "")] = props
    return out


@needs_cgroup_v1
def test_cpu_cap_throttles(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.mark.isolated(cpu=0.3)
        def test_busy():
            end = time.process_time() + 1.0
            while time.process_time() < end:
                pass

        @pytest.mark.isolated
        def test_uncapped():
            end = time.process_time() + 0.3
            while time.process_time() < end:
                pass
        """
    )
    result = run("--junitxml=out.xml")
    result.assert_outcomes(passed=2)
    props = _properties(str(pytester.path / "out.xml"))
    busy = props["test_busy"]
    cpu = float(busy["isolate_cpu_user_s"]) + float(busy["isolate_cpu_system_s"])
    wall = float(busy["isolate_wall_s"])
    assert 0.9 < cpu < 1.6, busy
    assert int(busy["isolate_nr_throttled"]) > 5, busy
    # Ideally ~2.3 s; less when a loaded machine leaves the test short of even its quota.
    assert float(busy["isolate_throttled_s"]) > 0.3, busy
    # 1 s of CPU at 30% of one CPU takes more than 3 s of wall time.
    assert wall > 2.8, busy
    assert int(props["test_uncapped"]["isolate_nr_throttled"]) == 0


@needs_cgroup_v1
def test_memory_cap_oom_kill_is_reported(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.isolated(mem="64M")
        def test_hog():
            print("allocating")
            data = bytearray(200 * 2**20)
            for i in range(0, len(data), 4096):
                data[i] = 1

        @pytest.mark.isolated(mem="64M")
        def test_fits():
            data = bytearray(16 * 2**20)
            data[::4096] = b"x" * len(data[::4096])
        """
    )
    result = run("--junitxml=out.xml")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*The isolated test was killed during call: out of memory: the cgroup memory limit "
            "is 64.0 MiB (mem=67108864), peak usage 6?.? MiB*",
            "*Captured stdout call*",
            "allocating",
            "*OOM kill (1x, limit 64.0 MiB): test_memory_cap_oom_kill_is_reported.py::test_hog*",
        ]
    )
    props = _properties(str(pytester.path / "out.xml"))
    assert props["test_hog"]["isolate_oom_kills"] == "1"
    assert int(props["test_hog"]["isolate_peak_mem_bytes"]) >= 60 * 2**20
    assert props["test_fits"]["isolate_oom_kills"] == "0"
    assert 16 * 2**20 <= int(props["test_fits"]["isolate_peak_mem_bytes"]) < 64 * 2**20


@needs_cgroup_v1
def test_pids_cap_stops_a_fork_bomb(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile("import os, time, pytest\n" + fork_bomb(pids=32))
    result = run("--junitxml=out.xml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*fork refused after 3? children*",
            "*pids limit hit: the sandbox may hold 32 processes and threads (pids=32); "
            "* fork(s) were refused with EAGAIN*",
            "*pids limit 32 hit: *test_fork_bomb*",
        ]
    )
    props = _properties(str(pytester.path / "out.xml"))
    assert int(props["test_fork_bomb"]["isolate_pids_limit_hits"]) >= 1
    assert int(props["test_fork_bomb"]["isolate_peak_pids"]) == 32


@needs_root
def test_timeout_kills_sandbox_and_dumps_every_thread(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    pytester.makepyfile(
        """
        import threading, time, pytest

        def helper_thread_body():
            time.sleep(60)

        @pytest.mark.isolated(timeout=1)
        def test_hangs():
            threading.Thread(target=helper_thread_body, daemon=True).start()
            print("before the hang")
            time.sleep(60)

        def test_next_runs():
            pass
        """
    )
    result = run("--junitxml=out.xml", timeout=60)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Timeout: the test ran past its timeout of 1 s; the sandbox was killed during call.*",
            "*timeout after 1 s*",
            "*Python stack of every thread at the deadline:*",
            "*helper_thread_body*",
            "*test_hangs*",
            "*Captured stdout call*",
            "before the hang",
            "*timeout after 1 s: *test_hangs*",
        ]
    )
    duration = float(_properties(str(pytester.path / "out.xml"))["test_hangs"]["isolate_wall_s"])
    assert 1.0 <= duration < 5


CRASHES = {
    "segfault": ("import ctypes; ctypes.string_at(0)", "was killed by signal 11 (SIGSEGV)"),
    "exit3": ("import os; os._exit(3)", "exited with status 3"),
    "sigkill": (
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        "was killed by signal 9 (SIGKILL)",
    ),
    "closefds": (
        "import os, time; os.closerange(0, 65536); time.sleep(0.2); os._exit(0)",
        "exited with status 0",
    ),
    "garbage": (
        "import os\n"
        "for fd in map(int, os.listdir('/proc/self/fd')):\n"
        "    try:\n"
        "        os.write(fd, b'garbage!' * 4)\n"
        "    except OSError:\n"
        "        pass",
        "wrote something that is not a report to the report pipe",
    ),
    "midmessage": (
        "import os\n"
        "from pytest_isolate import wire\n"
        "from pytest_isolate.testprocess.main import current_channel\n"
        "frame = wire.encode(wire.Kind.REPORT, {'longrepr': 'x' * 10000}, current_channel().key)\n"
        "os.write(current_channel().fd, frame[:5000])\n"
        "os._exit(0)",
        "exited with status 0",
    ),
}


@needs_root
@pytest.mark.parametrize("phase", ["setup", "call", "teardown"])
@pytest.mark.parametrize("kind", sorted(CRASHES))
def test_crash_becomes_a_report(
    pytester: pytest.Pytester, run: RunPytest, kind: str, phase: str
) -> None:
    code, message = CRASHES[kind]
    crash = "\n".join("    " + line for line in code.splitlines())
    call = {p: ("crash()" if p == phase else "pass") for p in ("setup", "call", "teardown")}
    source = f"""import pytest

def crash():
{crash}

@pytest.fixture
def fx():
    print("setting up")
    {call["setup"]}
    yield
    print("tearing down")
    {call["teardown"]}

@pytest.mark.isolated
def test_crash(fx):
    print("in the test")
    {call["call"]}

def test_after():
    pass
"""
    pytester.makepyfile(source)
    result = run("-rA", timeout=60)
    outcomes = {"setup": dict(errors=1, passed=1), "call": dict(failed=1, passed=1),
                "teardown": dict(passed=2, errors=1)}[phase]  # fmt: skip
    result.assert_outcomes(**outcomes)
    result.stdout.fnmatch_lines([f"*{message}*during {phase}*"])
    if kind == "midmessage":
        result.stdout.fnmatch_lines(["*It died in the middle of sending a message to pytest.*"])
    if kind not in ("closefds", "garbage", "midmessage"):
        expected = {"setup": "setting up", "call": "in the test", "teardown": "tearing down"}[phase]
        result.stdout.fnmatch_lines([f"*Captured stdout {phase}*", expected])
    if phase == "teardown":  # the call's own report survived the crash after it
        result.stdout.fnmatch_lines(["PASSED *::test_crash"])
