"""Which cgroups the sandboxes get (``host.cgroup_choice``): the host's, a named subtree, a
delegated one; the cgroup check's detail and fixes. On fake cgroupfs trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_isolate.cgroups import PREFIX, CgroupError, v2, v2_delegation
from pytest_isolate.cgroups.owners import owner_token
from pytest_isolate.cgroups.v2 import CgroupV2
from pytest_isolate.host import cgroup_choice


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
    monkeypatch.setattr(cgroup_choice, "detect", lambda *args: backend)
    monkeypatch.setattr(v2, "_makedirs", _cgroupfs_makedirs)
    check = cgroup_choice.cgroup_check(root=True)
    assert (check.ok, check.detail) == (False, "cgroup v2: memory; controllers missing: cpu, pids")
    assert check.fix == (
        "enable them for the children of the cgroup2 root: "
        f"echo '+cpu +memory +pids' > {root}/cgroup.subtree_control"
    )
    assert (root / PREFIX / owner_token() / "cgroup.subtree_control").read_text() == (
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
    monkeypatch.setattr(v2_delegation, "_delegated", {})
    monkeypatch.setattr(v2, "_makedirs", _cgroupfs_makedirs)
    monkeypatch.setattr(v2_delegation, "_makedirs", _cgroupfs_makedirs)
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
    backend = cgroup_choice.cgroup_backend(proc=str(proc))
    assert isinstance(backend, CgroupV2)
    assert (backend.version, backend.delegated_path) == (2, SCOPE)
    assert backend.hierarchies() == [str(mount) + SCOPE]
    assert backend.controllers == {"cpu", "memory", "pids"}
    _in(proc, f"{SCOPE}/pytest-isolate-77.123")  # in the leaf a pytest moved into: its base
    backend = cgroup_choice.cgroup_backend(proc=str(proc))
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
    assert cgroup_choice.cgroup_backend(proc=str(proc)) is None
    check = cgroup_choice.cgroup_check(False, proc=str(proc))
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
    backend = cgroup_choice.cgroup_backend("/pytest-isolate-deleg", str(proc))
    assert isinstance(backend, CgroupV2) and backend.delegated_path == "/pytest-isolate-deleg"
    with pytest.raises(PermissionError) as denied:
        cgroup_choice.cgroup_backend("/pytest-isolate-other", str(proc))
    assert str(denied.value) == (
        f"[Errno 13] {mount}/pytest-isolate-other is not delegated to this user (uid {UID}): "
        "it, its cgroup.procs and its cgroup.subtree_control must be owned by the user, as "
        "systemd's Delegate=yes does"
    )
    _in(proc, "/elsewhere")
    with pytest.raises(CgroupError) as outside:
        cgroup_choice.cgroup_backend("/pytest-isolate-deleg", str(proc))
    assert outside.value.strerror == (
        "pytest runs in the cgroup /elsewhere, outside /pytest-isolate-deleg: on cgroup v2 an "
        "ordinary user can move processes only within a cgroup delegated to it, so pytest "
        "must be started inside it"
    )
    check = cgroup_choice.cgroup_check(False, "/pytest-isolate-deleg", str(proc))
    assert (check.ok, check.detail) == (False, str(outside.value))
    assert "systemd-run --user --scope -p Delegate=yes pytest" in check.fix


def test_rootless_v2_parent_without_cpu_names_the_fix(rootless_v2: tuple[Path, Path]) -> None:
    proc, mount = rootless_v2
    _group(mount, SCOPE, controllers="memory pids")
    _in(proc, SCOPE)
    check = cgroup_choice.cgroup_check(False, proc=str(proc))
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
    version, controllers, missing = cgroup_choice.parse_cgroup_detail(text)
    assert version is not None
    assert cgroup_choice.cgroup_detail(version, controllers, missing) == text


def test_cgroup_detail_of_anything_else_means_no_cgroups() -> None:
    assert cgroup_choice.parse_cgroup_detail("no writable cgroup hierarchy") == (None, (), ())
    assert cgroup_choice.parse_cgroup_detail("cgroup vX: cpu") == (None, (), ())
