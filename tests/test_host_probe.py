"""The host probe and ``python -m pytest_isolate doctor``: tried, not guessed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import needs_cgroup_v1, needs_cgroup_v2, needs_root
from pytest_isolate.__main__ import main
from pytest_isolate.host import probe
from pytest_isolate.host.checks import APPARMOR_SYSCTL, MAX_USERNS_SYSCTL, Capabilities, Check
from pytest_isolate.host.probe import format_report


@needs_cgroup_v1
def test_doctor_as_root_reports_everything_available() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_isolate", "doctor"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("]")[0] for line in lines[:-1]] == ["[ok  "] * 6
    assert "[ok  ] cgroup caps: cgroup v1: cpu, cpuacct, memory, pids" in lines
    assert "[ok  ] overlay snapshot" in lines and "[ok  ] fresh /proc" in lines
    assert lines[-1] == "all isolation available"


UNPRIVILEGED_DOCTOR = """
import ctypes, sys
import pytest_isolate.__main__, pytest_isolate.cgroups.v1, pytest_isolate.cgroups.v2  # import first
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(0x10000000) == 0  # a user namespace with no mapping: uid 65534, no caps
sys.exit(pytest_isolate.__main__.main(["doctor"]))
"""


@needs_root
def test_doctor_without_privileges_says_what_is_missing_and_how_to_fix_it() -> None:
    result = subprocess.run(
        [sys.executable, "-c", UNPRIVILEGED_DOCTOR], capture_output=True, text=True, cwd="/"
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "[FAIL] user namespace: " in out
    assert "[FAIL] overlay snapshot: " in out
    assert (
        "[FAIL] cgroup caps: no writable cgroup hierarchy (v1 cpu/cpuacct/memory/pids or v2)"
        in out
    )
    assert out.count("fix: ") >= 2
    assert out.splitlines()[-1] == "some isolation is not available"


def test_doctor_usage() -> None:
    assert main(["nonsense"]) == 2


def test_format_report_lists_fixes_for_failures_only() -> None:
    caps = Capabilities(
        (Check("linux", True, "6.1"), Check("user namespace", False, "EPERM", "do this"))
    )
    assert format_report(caps).splitlines() == [
        "[ok  ] linux: 6.1",
        "[FAIL] user namespace: EPERM",
        "       fix: do this",
        "some isolation is not available",
    ]
    assert caps.get("user namespace").fix == "do this"
    assert not caps.ok


@pytest.mark.parametrize(
    ("sysctls", "expected"),
    [
        ({APPARMOR_SYSCTL: "1"}, "kernel.apparmor_restrict_unprivileged_userns=0"),
        ({MAX_USERNS_SYSCTL: "0"}, "user.max_user_namespaces=15000"),
        ({}, "seccomp=unconfined"),
    ],
)
def test_user_namespace_fix_names_the_cause(
    monkeypatch: pytest.MonkeyPatch, sysctls: dict[str, str], expected: str
) -> None:
    monkeypatch.setattr(probe, "read_text", sysctls.get)
    assert expected in probe._userns_fix()


def test_doctor_cgroup_root_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--isolate-cgroup-root", "relative"]) == 2
    assert "--isolate-cgroup-root: invalid cgroup_root='relative'" in capsys.readouterr().err
    assert main(["doctor", "--isolate-cgroup-root"]) == 2


@needs_cgroup_v1
def test_doctor_names_a_missing_cgroup_root() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_isolate", "doctor", "--isolate-cgroup-root",
         "/pytest-isolate/no-such-group"], capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert "[FAIL] cgroup caps: no cgroup hierarchy has /pytest-isolate/no-such-group" in (
        result.stdout
    )


@needs_cgroup_v2
def test_doctor_on_cgroup_v2_reports_everything_available() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_isolate", "doctor"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "[ok  ] cgroup caps: cgroup v2: cpu, memory, pids" in lines
    assert lines[-1] == "all isolation available"
