"""The host probe and ``python -m pytest_isolate doctor``: tried, not guessed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_cgroup_v1, needs_cgroup_v2, needs_root
from pytest_isolate import cgroups, probe
from pytest_isolate.__main__ import main
from pytest_isolate.cgroups import PREFIX, v2
from pytest_isolate.cgroups.v2 import CgroupV2
from pytest_isolate.probe import Capabilities, Check, format_report


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
        ({probe.APPARMOR_SYSCTL: "1"}, "kernel.apparmor_restrict_unprivileged_userns=0"),
        ({probe.MAX_USERNS_SYSCTL: "0"}, "user.max_user_namespaces=15000"),
        ({}, "seccomp=unconfined"),
    ],
)
def test_user_namespace_fix_names_the_cause(
    monkeypatch: pytest.MonkeyPatch, sysctls: dict[str, str], expected: str
) -> None:
    monkeypatch.setattr(probe, "_read", sysctls.get)
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


def _cgroupfs_makedirs(path: str) -> None:
    # Like cgroupfs, a new group directory comes with its cgroup.subtree_control.
    os.makedirs(path, exist_ok=True)
    Path(path, "cgroup.subtree_control").touch()


def test_doctor_names_the_v2_fix_for_missing_controllers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.subtree_control").write_text("memory\n")
    backend = CgroupV2(str(root), ["memory"])
    monkeypatch.setattr(cgroups, "detect", lambda *args: backend)
    monkeypatch.setattr(v2, "_makedirs", _cgroupfs_makedirs)
    check = probe._cgroups(root=True)
    assert (check.ok, check.detail) == (False, "cgroup v2: memory; controllers missing: cpu, pids")
    assert check.fix == (
        "enable them for the children of the cgroup2 root: "
        f"echo '+cpu +memory +pids' > {root}/cgroup.subtree_control"
    )
    assert (root / PREFIX / cgroups.owner_token() / "cgroup.subtree_control").read_text() == (
        "+memory"
    )


# -- rootless cgroup v2: the delegated cgroup, found or named --------------------------------

UID = 4321


@pytest.fixture
def rootless_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A fake pure cgroup v2 host seen by an unprivileged user (uid ``UID``): a /proc with
    the mountinfo and this process's cgroup, and a cgroup2 mount. Returns (proc, mount)."""
    proc, mount = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        f"30 1 0:26 / {mount} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    mount.mkdir()
    # We are root here: be user UID, who may write only what it owns (cgroupfs modes).
    real_access = os.access

    def access(path: str, mode: int) -> bool:
        if mode & os.W_OK:
            return os.stat(path).st_uid == UID
        return real_access(path, mode)

    monkeypatch.setattr(os, "geteuid", lambda: UID)
    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(v2, "_delegated", {})
    monkeypatch.setattr(v2, "_makedirs", _cgroupfs_makedirs)
    return proc, mount


def _group(mount: Path, path: str, owner: int = UID, controllers: str = "cpu memory pids") -> None:
    d = mount / path.lstrip("/")
    d.mkdir(parents=True)
    (d / "cgroup.controllers").write_text(controllers + "\n")
    for name in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
        (d / name).write_text("")
    for entry in (d, d / "cgroup.procs", d / "cgroup.subtree_control", d / "cgroup.threads"):
        os.chown(entry, owner, owner)


def _in(proc: Path, path: str) -> None:
    (proc / "self" / "cgroup").write_text(f"0::{path}\n")


SCOPE = "/user.slice/user-4321.slice/user@4321.service/app.slice/run-r1.scope"


def test_rootless_v2_uses_the_delegated_scope_it_sits_in(rootless_v2: tuple[Path, Path]) -> None:
    proc, mount = rootless_v2
    _group(mount, SCOPE)
    _in(proc, SCOPE)
    backend = probe.cgroup_backend(proc=str(proc))
    assert isinstance(backend, CgroupV2)
    assert (backend.version, backend.delegated_path) == (2, SCOPE)
    assert backend.hierarchies() == [str(mount) + SCOPE]
    assert backend.controllers == {"cpu", "memory", "pids"}
    _in(proc, f"{SCOPE}/pytest-isolate-77.123")  # in the leaf a pytest moved into: its base
    backend = probe.cgroup_backend(proc=str(proc))
    assert isinstance(backend, CgroupV2) and backend.delegated_path == SCOPE


@pytest.mark.parametrize(
    ("owner", "where"),
    [(0, SCOPE), (UID, "/")],
    ids=["not-chowned", "root-cgroup"],
)
def test_rootless_v2_without_a_delegation_uses_no_cgroup(
    rootless_v2: tuple[Path, Path], owner: int, where: str
) -> None:
    proc, mount = rootless_v2
    _group(mount, SCOPE, owner=owner)
    _in(proc, where)
    assert probe.cgroup_backend(proc=str(proc)) is None
    check = probe._cgroups(False, proc=str(proc))
    assert not check.ok
    assert check.fix == (
        "start pytest as the only process of a cgroup delegated to you: systemd-run --user "
        "--scope -p Delegate=yes pytest ... (see the README's rootless setup)"
    )


def test_rootless_v2_named_cgroup_must_be_delegated_and_hold_pytest(
    rootless_v2: tuple[Path, Path],
) -> None:
    proc, mount = rootless_v2
    _group(mount, "/pytest-isolate-deleg")
    _group(mount, "/pytest-isolate-deleg/shell")
    _group(mount, "/pytest-isolate-other", owner=0)
    _in(proc, "/pytest-isolate-deleg/shell")
    backend = probe.cgroup_backend("/pytest-isolate-deleg", str(proc))
    assert isinstance(backend, CgroupV2) and backend.delegated_path == "/pytest-isolate-deleg"
    with pytest.raises(PermissionError) as denied:
        probe.cgroup_backend("/pytest-isolate-other", str(proc))
    assert str(denied.value) == (
        f"[Errno 13] {mount}/pytest-isolate-other is not delegated to this user (uid {UID}): "
        "it, its cgroup.procs and its cgroup.subtree_control must be owned by the user, as "
        "systemd's Delegate=yes does"
    )
    _in(proc, "/elsewhere")
    with pytest.raises(cgroups.CgroupError) as outside:
        probe.cgroup_backend("/pytest-isolate-deleg", str(proc))
    assert outside.value.strerror == (
        "pytest runs in the cgroup /elsewhere, outside /pytest-isolate-deleg: on cgroup v2 an "
        "ordinary user can move processes only within a cgroup delegated to it, so pytest "
        "must be started inside it"
    )
    check = probe._cgroups(False, "/pytest-isolate-deleg", str(proc))
    assert (check.ok, check.detail) == (False, str(outside.value))
    assert "systemd-run --user --scope -p Delegate=yes pytest" in check.fix


def test_rootless_v2_parent_without_cpu_names_the_fix(rootless_v2: tuple[Path, Path]) -> None:
    proc, mount = rootless_v2
    _group(mount, SCOPE, controllers="memory pids")
    _in(proc, SCOPE)
    check = probe._cgroups(False, proc=str(proc))
    assert (check.ok, check.detail) == (False, "cgroup v2: memory, pids; controllers missing: cpu")
    assert check.fix == (
        f"the parent cgroup must pass them on to {mount}{SCOPE}: with systemd, delegate them "
        "to user sessions (Delegate=cpu memory pids in a drop-in for user@.service; see the "
        f"README's rootless setup), else as root: echo '+cpu' > {mount}{os.path.dirname(SCOPE)}"
        "/cgroup.subtree_control"
    )
    assert (mount / SCOPE.lstrip("/") / "cgroup.subtree_control").read_text() == "+memory +pids"


@pytest.mark.parametrize(
    "text",
    ["cgroup v1: cpu, cpuacct, memory, pids", "cgroup v2: memory, pids; controllers missing: cpu"],
)
def test_cgroup_detail_round_trips(text: str) -> None:
    version, controllers, missing = probe.parse_cgroup_detail(text)
    assert version is not None
    assert probe.cgroup_detail(version, controllers, missing) == text


def test_cgroup_detail_of_anything_else_means_no_cgroups() -> None:
    assert probe.parse_cgroup_detail("no writable cgroup hierarchy") == (None, (), ())
    assert probe.parse_cgroup_detail("cgroup vX: cpu") == (None, (), ())
