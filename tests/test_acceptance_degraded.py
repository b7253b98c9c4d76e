"""End to end: hosts that cannot give every part of the sandbox.

Each case produces the condition for real (``tests/conditions.py`` enters it and execs the
inner pytest), then checks the header line, the one warning, the ``isolate_missing``
property of the test's report, what the test saw, and that ``--isolate-strict`` fails the
session before any test runs.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import needs_cgroup_v1, needs_root

CONDITIONS = str(Path(__file__).with_name("conditions.py"))

PROBE_TEST = """
import os, pytest

@pytest.mark.isolated
def test_isolated():
    open(os.environ["RAN_MARKER"], "w").close()
    print("pid", os.getpid(), "uid", os.getuid())
    with open("/proc/self/uid_map") as f:
        print("uid_map", f.read().split())
    try:
        open("/etc/pytest-isolate-degraded-probe", "w").close()
        print("etc writable")
    except OSError as exc:
        print("etc not writable", exc)

def test_in_process():
    pass
"""


def _run_in(
    pytester: pytest.Pytester, condition: str, *args: str, timeout: float = 120
) -> pytest.RunResult:
    pytester.makepyfile(PROBE_TEST)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-s"]
    return pytester.run(
        sys.executable, CONDITIONS, condition, "--", *command, *args, timeout=timeout
    )


def _properties(path: Path, test: str) -> dict[str, str]:
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.get("name") == test:
            return {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
    raise AssertionError(f"{test} not in {path}")


def _header(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if line.startswith("isolation:")]
    assert len(lines) == 1, result.outlines[:10]
    return lines[0]


def _warnings(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "PytestWarning: pytest-isolate: " in line]


@pytest.fixture
def marker(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = pytester.path / "ran"
    monkeypatch.setenv("RAN_MARKER", str(path))
    return path


@pytest.fixture(autouse=True)
def _etc_unchanged() -> object:
    probe = Path("/etc/pytest-isolate-degraded-probe")
    yield
    if probe.exists():  # fork-only isolation writes to the host: that is what it says
        probe.unlink()


def _check_strict(pytester: pytest.Pytester, condition: str, marker: Path, part: str) -> None:
    marker.unlink(missing_ok=True)
    result = _run_in(pytester, condition, "--isolate-strict")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(
        [
            f"ERROR: command line option --isolate-strict: this host cannot give full "
            f"isolation, missing *{part} (*"
        ]
    )
    assert not marker.exists()
    assert "passed" not in result.stdout.str()
    pytester.makeini("[pytest]\nisolate_strict = true\n")
    result = _run_in(pytester, condition)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini option isolate_strict: this host cannot give *"])
    assert not marker.exists()


@needs_cgroup_v1
def test_full_isolation_header_no_warning_no_property(
    pytester: pytest.Pytester, marker: Path
) -> None:
    pytester.makepyfile(PROBE_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "--isolate-strict", "--junitxml=out.xml"
    )
    result.assert_outcomes(passed=2)
    assert _header(result) == (
        "isolation: pid net mnt uts ipc user namespaces, overlay snapshot, "
        "cgroup v1 (cpu cpuacct memory pids)"
    )
    assert _warnings(result) == []
    assert "isolate_missing" not in _properties(pytester.path / "out.xml", "test_isolated")
    assert "etc writable" in result.stdout.str()  # the snapshot's /etc, not the host's
    assert not Path("/etc/pytest-isolate-degraded-probe").exists()


@needs_cgroup_v1
def test_unshare_blocked_by_seccomp_runs_fork_only(pytester: pytest.Pytester, marker: Path) -> None:
    result = _run_in(pytester, "seccomp-unshare", "--junitxml=out.xml")
    result.assert_outcomes(passed=2)
    assert marker.exists()
    assert _header(result).startswith("isolation: fork only (each test in a forked child")
    (warning,) = _warnings(result)
    assert "isolated tests run fork-only, without user namespace (unshare(" in warning
    assert "pid/net/mnt/uts/ipc namespaces (unshare is refused: " in warning
    assert "fix: allow user namespaces (in Docker: --security-opt seccomp=unconfined)" in warning
    props = _properties(pytester.path / "out.xml", "test_isolated")
    assert props["isolate_missing"] == (
        "user namespace, pid/net/mnt/uts/ipc namespaces, overlay snapshot, cgroup caps"
    )
    assert "isolate_wall_s" in props  # it ran through the forked child's report pipe
    assert "isolate_missing" not in _properties(pytester.path / "out.xml", "test_in_process")
    # A forked child of pytest, in the host's pid namespace: not pid 2.
    assert "pid 2 " not in result.stdout.str()
    _check_strict(pytester, "seccomp-unshare", marker, "user namespace")


@needs_cgroup_v1
def test_fork_only_still_reports_crashes_and_timeouts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, time, pytest

        @pytest.mark.isolated
        def test_exit():
            os._exit(3)

        @pytest.mark.isolated(timeout=1)
        def test_hang():
            time.sleep(60)

        def test_after():
            pass
        """
    )
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "ignore"]
    result = pytester.run(sys.executable, CONDITIONS, "seccomp-unshare", "--", *command)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*The isolated test process exited with status 3 during call*",
            "*Timeout: the test ran past its timeout of 1 s*",
        ]
    )
    result.stdout.fnmatch_lines(["*in test_hang*"])  # the stack at the deadline


@needs_cgroup_v1
def test_no_user_namespace_as_root(pytester: pytest.Pytester, marker: Path) -> None:
    result = _run_in(pytester, "seccomp-userns", "--junitxml=out.xml")
    result.assert_outcomes(passed=2)
    assert _header(result) == (
        "isolation: pid net mnt uts ipc namespaces (no user namespace), overlay snapshot, "
        "cgroup v1 (cpu cpuacct memory pids)"
    )
    (warning,) = _warnings(result)
    assert "isolated tests run without user namespace (unshare(CLONE_NEWUSER) is refused" in (
        warning
    )
    props = _properties(pytester.path / "out.xml", "test_isolated")
    assert props["isolate_missing"] == "user namespace"
    assert "isolate_peak_mem_bytes" in props  # the caps and counters still work
    out = result.stdout.str()
    assert "pid 2 uid 0" in out  # still pid 2 of its own pid namespace
    assert "etc writable" in out  # the snapshot
    assert not Path("/etc/pytest-isolate-degraded-probe").exists()
    _check_strict(pytester, "seccomp-userns", marker, "user namespace")


@needs_root
def test_read_only_cgroups_give_no_caps(pytester: pytest.Pytester, marker: Path) -> None:
    result = _run_in(pytester, "ro-cgroup", "--junitxml=out.xml")
    result.assert_outcomes(passed=2)
    assert _header(result) == (
        "isolation: pid net mnt uts ipc user namespaces, overlay snapshot, no cgroup caps"
    )
    (warning,) = _warnings(result)
    assert "isolated tests run without cgroup caps (no writable cgroup hierarchy" in warning
    props = _properties(pytester.path / "out.xml", "test_isolated")
    assert props["isolate_missing"] == "cgroup caps"
    assert "isolate_peak_mem_bytes" not in props
    assert "pid 2 uid 0" in result.stdout.str()
    _check_strict(pytester, "ro-cgroup", marker, "cgroup caps")


@needs_root
def test_no_caps_asked_no_cgroup_warning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.isolated(pids=None)
        def test_uncapped():
            pass
        """
    )
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--junitxml=out.xml"]
    result = pytester.run(sys.executable, CONDITIONS, "ro-cgroup", "--", *command)
    result.assert_outcomes(passed=1)
    assert _warnings(result) == []
    assert "isolate_missing" not in _properties(pytester.path / "out.xml", "test_uncapped")


@needs_root
def test_warning_is_an_error_under_filterwarnings_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.isolated
        def test_one():
            pass
        """
    )
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    result = pytester.run(sys.executable, CONDITIONS, "ro-cgroup", "--", *command)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*pytest-isolate: isolated tests run without cgroup caps*"])


def test_bad_cgroup_root_names_its_source(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one(): pass")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--isolate-cgroup-root=x/y")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: command line option --isolate-cgroup-root: invalid cgroup_root='x/y'; "
            "expected a cgroup path as /proc/self/cgroup shows it, starting with '/'*"
        ]
    )
    pytester.makeini("[pytest]\nisolate_strict = maybe\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini option isolate_strict: invalid value 'maybe'*"])


def test_conditions_helper_refuses_unknown_conditions() -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, CONDITIONS, "bogus", "--", "true"], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "unknown condition 'bogus'" in result.stderr
    assert os.path.exists(CONDITIONS)
