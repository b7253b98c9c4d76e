"""Unit tests for the cgroup v2 backend (``pytest_isolate.cgroups.v2``, with a delegated
base: ``v2_delegation``) and its detection (``cgroups.detect``).

Most tests run against fake mountinfo entries, a fake /proc and a fake cgroupfs tree under
``tmp_path``. The ``needs_cgroup_v2`` tests use a real cgroup v2 kernel (``.ci/v2-guest``
boots one; they skip elsewhere), but only ever create, touch and remove groups under
``<mount>/pytest-isolate/`` and only signal processes that they started themselves.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import needs_cgroup_v2, reap
from pytest_isolate.cgroups import PREFIX, CgroupError, Limits, Usage, v2, v2_delegation
from pytest_isolate.cgroups.detect import attach, detect
from pytest_isolate.cgroups.owners import owner_token
from pytest_isolate.cgroups.v1 import CgroupV1, GroupV1
from pytest_isolate.cgroups.v2 import CONTROLLERS, UNIFIED, CgroupV2, GroupV2
from pytest_isolate.cgroups.v2_delegation import (
    LEAF_PREFIX,
    is_leaf_name,
    leave_delegated,
    own_cgroup,
)
from pytest_isolate.mountinfo import MountEntry, parse_mountinfo

MiB = 2**20


def _entry(mount_id: int, mount_point: str, *options: str, fstype: str = "cgroup2") -> MountEntry:
    return MountEntry(mount_id, 30, "/", mount_point, frozenset({"rw"}), fstype, fstype,
                      frozenset({"rw", *options}))  # fmt: skip


def _v2_root(path: Path, enabled: str = "cpu memory pids") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (path / "cgroup.subtree_control").write_text(enabled + "\n")
    return path


def _v1_mounts(root: Path) -> list[MountEntry]:
    entries = []
    for i, hierarchy in enumerate(("cpu,cpuacct", "memory", "pids")):
        (root / hierarchy).mkdir(parents=True)
        entries.append(_entry(10 + i, str(root / hierarchy), *hierarchy.split(","),
                              fstype="cgroup"))  # fmt: skip
    return entries


# -- detection -----------------------------------------------------------------------------------


def test_detect_pure_v2(tmp_path: Path) -> None:
    root = _v2_root(tmp_path / "cgroup")
    backend = detect([_entry(1, str(root), "nsdelegate")])
    assert isinstance(backend, CgroupV2)
    assert backend.version == 2
    assert backend.controllers == frozenset(CONTROLLERS)
    assert backend.hierarchies() == [str(root)]


def test_detect_pure_v2_with_some_controllers(tmp_path: Path) -> None:
    # Without a v1 alternative, v2 is used with what it has (the doctor names the rest).
    root = _v2_root(tmp_path / "cgroup", enabled="memory io")
    backend = detect([_entry(1, str(root))])
    assert isinstance(backend, CgroupV2)
    assert backend.controllers == frozenset({"memory"})


def test_detect_hybrid_with_controllers_on_v1_picks_v1(tmp_path: Path) -> None:
    # This build machine: cpu, cpuacct, memory and pids on v1; the unified mount has hugetlb.
    unified = _v2_root(tmp_path / "unified", enabled="hugetlb")
    backend = detect([*_v1_mounts(tmp_path / "v1"), _entry(9, str(unified))])
    assert isinstance(backend, CgroupV1)
    assert backend.version == 1


def test_detect_hybrid_with_controllers_on_v2_picks_v2(tmp_path: Path) -> None:
    unified = _v2_root(tmp_path / "unified")
    backend = detect([*_v1_mounts(tmp_path / "v1"), _entry(9, str(unified))])
    assert isinstance(backend, CgroupV2)
    assert backend.hierarchies() == [str(unified)]


def test_detect_parsed_mountinfo_text(tmp_path: Path) -> None:
    root = _v2_root(tmp_path / "cgroup")
    text = (
        f"25 30 0:22 / {tmp_path / 'sys'} rw,nosuid - sysfs sysfs rw\n"
        f"26 25 0:23 / {root} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
        "rw,nsdelegate,memory_recursiveprot\n"
    )
    backend = detect(parse_mountinfo(text))
    assert isinstance(backend, CgroupV2)
    assert backend.hierarchies() == [str(root)]


def test_detect_nothing(tmp_path: Path) -> None:
    assert detect([]) is None
    assert detect([_entry(1, str(tmp_path / "missing"))]) is None
    assert CgroupV2.from_mounts([_entry(1, str(tmp_path), "cpu", fstype="cgroup")]) is None


def test_from_mounts_prefers_sys_fs_cgroup(tmp_path: Path) -> None:
    other = _v2_root(tmp_path / "other")
    entries = [_entry(1, str(other)), _entry(2, "/sys/fs/cgroup")]
    backend = CgroupV2.from_mounts(entries)
    assert backend is not None
    expected = "/sys/fs/cgroup" if os.access("/sys/fs/cgroup", os.W_OK) else str(other)
    assert backend.hierarchies() == [expected]


def test_from_mounts_unreadable_subtree_control_means_no_controllers(tmp_path: Path) -> None:
    backend = CgroupV2.from_mounts([_entry(1, str(tmp_path))])
    assert backend is not None
    assert backend.controllers == frozenset()


# -- GroupV2 on a fake cgroupfs ------------------------------------------------------------------


def _fake_group(root: Path, controllers: tuple[str, ...] = CONTROLLERS) -> GroupV2:
    d = root / PREFIX / "1.1" / "g"
    d.mkdir(parents=True, exist_ok=True)
    return GroupV2("1.1/g", str(d), controllers)


USAGE_FILES = {
    "cpu.stat": "usage_usec 3000000\nuser_usec 1000000\nsystem_usec 1000000\n"
    "nr_periods 50\nnr_throttled 7\nthrottled_usec 250000\nnr_bursts 0\nburst_usec 0\n",
    "memory.peak": "134217728\n",
    "memory.events": "low 0\nhigh 0\nmax 40\noom 2\noom_kill 3\noom_group_kill 1\n",
    "pids.peak": "17\n",
    "pids.events": "max 3\n",
}


def _files(group: GroupV2, files: dict[str, str]) -> None:
    for name, text in files.items():
        Path(group.path, name).write_text(text)


def test_read_usage_fake(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    _files(group, USAGE_FILES)
    assert group.read_usage() == Usage(
        cpu_user=1.5,
        cpu_system=1.5,
        peak_mem=134217728,
        oom_kills=2,
        nr_throttled=7,
        throttled=0.25,
        peak_pids=17,
        pids_limit_hits=3,
    )


@pytest.mark.parametrize(
    ("events", "kills"),
    [
        ("oom 1\noom_kill 2\noom_group_kill 1\n", 1),  # one process: the victim counts twice
        ("oom 1\noom_kill 4\noom_group_kill 1\n", 3),  # victim and two more processes
        ("oom 1\noom_kill 1\noom_group_kill 1\n", 1),  # victim gone before the group kill
        ("oom 1\noom_kill 1\noom_group_kill 0\n", 1),  # memory.oom.group = 0
        ("oom 3\noom_kill 3\n", 3),  # a kernel without oom_group_kill
        ("oom 0\noom_kill 0\noom_group_kill 0\n", 0),
    ],
)
def test_read_usage_oom_kills(tmp_path: Path, events: str, kills: int) -> None:
    group = _fake_group(tmp_path)
    _files(group, {**USAGE_FILES, "memory.events": events})
    assert group.read_usage().oom_kills == kills


def test_read_usage_no_ticks_counts_as_user(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    _files(group, {**USAGE_FILES, "cpu.stat": "usage_usec 5000\nuser_usec 0\nsystem_usec 0\n"})
    usage = group.read_usage()
    assert (usage.cpu_user, usage.cpu_system, usage.nr_throttled, usage.throttled) == (
        0.005, 0.0, 0, 0.0,
    )  # fmt: skip


def test_read_usage_old_kernel_files_missing(tmp_path: Path) -> None:
    # memory.peak (5.19) and pids.peak (6.1) are absent on older kernels.
    group = _fake_group(tmp_path)
    _files(group, USAGE_FILES)
    for name in ("memory.peak", "pids.peak"):
        os.unlink(os.path.join(group.path, name))
    usage = group.read_usage()
    assert (usage.peak_mem, usage.peak_pids) == (None, None)
    assert (usage.oom_kills, usage.pids_limit_hits) == (2, 3)


def test_read_usage_without_controllers(tmp_path: Path) -> None:
    # cpu.stat's usage lines exist in every v2 group; the rest needs the controllers.
    group = _fake_group(tmp_path, controllers=())
    _files(group, {"cpu.stat": "usage_usec 2000000\nuser_usec 1500000\nsystem_usec 500000\n"})
    assert group.read_usage() == Usage(cpu_user=1.5, cpu_system=0.5)


def test_read_usage_nothing(tmp_path: Path) -> None:
    assert _fake_group(tmp_path, controllers=()).read_usage() == Usage()


def test_read_usage_missing_events_file_names_it(tmp_path: Path) -> None:
    group = _fake_group(tmp_path, controllers=("memory",))
    with pytest.raises(FileNotFoundError) as exc:
        group.read_usage()
    assert exc.value.filename == os.path.join(group.path, "memory.events")


LIMIT_FILES = ["cpu.max", "memory.max", "memory.swap.max", "memory.oom.group", "pids.max"]


def _limit_group(root: Path, swap: bool = True) -> GroupV2:
    group = _fake_group(root)
    for name in LIMIT_FILES:
        if name != "memory.swap.max" or swap:
            Path(group.path, name).write_text("")
    return group


def _contents(group: GroupV2) -> dict[str, str]:
    return {n: Path(group.path, n).read_text() for n in LIMIT_FILES if Path(group.path, n).exists()}


def test_set_limits_writes_files(tmp_path: Path) -> None:
    group = _limit_group(tmp_path)
    group.set_limits(Limits(cpu=0.3, mem=64 * MiB, pids=50))
    assert _contents(group) == {
        "cpu.max": "30000 100000",
        "memory.max": "67108864",
        "memory.swap.max": "0",
        "memory.oom.group": "1",
        "pids.max": "50",
    }


def test_set_limits_without_swap_accounting(tmp_path: Path) -> None:
    group = _limit_group(tmp_path, swap=False)
    group.set_limits(Limits(mem=128 * MiB))
    assert _contents(group) == {
        "cpu.max": "",
        "memory.max": "134217728",
        "memory.oom.group": "1",
        "pids.max": "",
    }


@pytest.mark.parametrize(
    ("cpu", "value"),
    [(2, "200000 100000"), (0.01, "1000 100000"), (0.333, "33300 100000"), (1.5, "150000 100000")],
)
def test_set_limits_cpu_max(tmp_path: Path, cpu: float, value: str) -> None:
    group = _limit_group(tmp_path)
    group.set_limits(Limits(cpu=cpu))
    assert _contents(group)["cpu.max"] == value


def test_set_limits_cpu_max_with_a_period(tmp_path: Path) -> None:
    group = _limit_group(tmp_path)
    group.set_limits(Limits(cpu=0.05, cpu_period=1.0))
    assert _contents(group)["cpu.max"] == "50000 1000000"


def test_set_limits_none_writes_nothing(tmp_path: Path) -> None:
    group = _limit_group(tmp_path)
    group.set_limits(Limits())
    assert set(_contents(group).values()) == {""}


def test_set_limits_only_enabled_controllers(tmp_path: Path) -> None:
    group = _fake_group(tmp_path, controllers=("pids",))
    Path(group.path, "pids.max").write_text("")
    group.set_limits(Limits(cpu=1, mem=64 * MiB, pids=9))
    assert Path(group.path, "pids.max").read_text() == "9"
    assert sorted(os.listdir(group.path)) == ["pids.max"]


def test_set_limits_error_names_file(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    path = os.path.join(group.path, "memory.max")
    with pytest.raises(CgroupError) as exc:
        group.set_limits(Limits(mem=64 * MiB))
    assert exc.value.errno == errno.ENOENT
    assert exc.value.strerror == f"cannot write '67108864' to {path}: No such file or directory"


def test_dirs_procs_files_and_attach(tmp_path: Path) -> None:
    group = _fake_group(tmp_path, controllers=("memory", "pids"))
    dirs = group.dirs()
    assert dirs == {UNIFIED: group.path, "memory": group.path, "pids": group.path}
    assert group.procs_files() == [os.path.join(group.path, "cgroup.procs")]
    again = attach(group.name, dirs)
    assert isinstance(again, GroupV2)
    assert (again.name, again.path, again.controllers) == (
        group.name, group.path, frozenset({"memory", "pids"}),
    )  # fmt: skip
    dirs["memory"] = "changed"
    assert group.dirs()["memory"] == group.path  # a copy
    # Without the cgroup2 key, the directories are v1 hierarchies.
    assert isinstance(attach("1.1/g", {"memory": str(tmp_path)}), GroupV1)


def test_pids_include_child_groups(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    Path(group.path, "cgroup.procs").write_text("12\n34\n")
    Path(group.path, "sub").mkdir()
    Path(group.path, "sub", "cgroup.procs").write_text("56\n")
    assert group.pids() == {12, 34, 56}


def test_kill_empty_group_returns(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    group.kill()  # no files at all
    Path(group.path, "cgroup.kill").write_text("")
    Path(group.path, "cgroup.events").write_text("populated 0\nfrozen 0\n")
    group.kill()
    assert Path(group.path, "cgroup.kill").read_text() == ""  # nothing to kill: not written


def test_kill_writes_cgroup_kill_until_empty(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    Path(group.path, "cgroup.kill").write_text("")
    Path(group.path, "cgroup.events").write_text("populated 1\nfrozen 0\n")
    with pytest.raises(CgroupError) as exc:
        group.kill(deadline=0.01)
    assert exc.value.errno == errno.EBUSY
    assert Path(group.path, "cgroup.kill").read_text() == "1"


def _unused_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1  # no process can have this pid


def test_kill_without_cgroup_kill_gives_up_after_deadline(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    ghost = _unused_pid()
    Path(group.path, "cgroup.procs").write_text(f"{ghost}\n")
    with pytest.raises(CgroupError) as exc:
        group.kill(deadline=0.01)
    assert exc.value.errno == errno.EBUSY
    assert exc.value.strerror == f"processes [{ghost}] survive in 1.1/g"


def test_remove_fake_with_child_groups(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    Path(group.path, "a", "b").mkdir(parents=True)
    Path(group.path, "c").mkdir()
    group.remove()
    assert not os.path.exists(group.path)
    group.remove()  # already gone: fine


def test_remove_non_empty_fails_at_once(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    Path(group.path, "leftover").write_text("")
    start = time.monotonic()
    with pytest.raises(CgroupError) as exc:
        group.remove()
    assert time.monotonic() - start < 1
    assert exc.value.errno == errno.ENOTEMPTY
    assert exc.value.strerror == f"cannot remove {group.path}: Directory not empty"


# -- CgroupV2 on a fake tree ---------------------------------------------------------------------


def _write_stat(proc: Path, pid: int, starttime: int | str) -> None:
    rest = ["S", *map(str, range(4, 22)), str(starttime), *map(str, range(23, 53))]
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "stat").write_text(f"{pid} (python3) {' '.join(rest)}\n")


@pytest.fixture(autouse=True)
def _cgroupfs_makedirs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like cgroupfs, give each directory the backend creates for a session (not the leaves)
    an empty ``cgroup.subtree_control``."""
    real = v2._makedirs  # type: ignore[attr-defined]

    def makedirs(path: str) -> None:
        real(path)
        control = os.path.join(path, "cgroup.subtree_control")
        if not os.path.exists(control):
            Path(control).write_text("")

    monkeypatch.setattr(v2, "_makedirs", makedirs)


def _fake_backend(tmp_path: Path, enabled: str = "cpu memory pids") -> tuple[CgroupV2, Path, str]:
    proc = tmp_path / "proc"
    _write_stat(proc, os.getpid(), 1000)
    root = _v2_root(tmp_path / "cg", enabled)
    backend = CgroupV2(str(root), enabled.split(), proc=str(proc))
    return backend, root, f"{os.getpid()}.1000"


def test_create_enables_controllers_on_our_levels_only(tmp_path: Path) -> None:
    backend, root, token = _fake_backend(tmp_path)
    root_control = (root / "cgroup.subtree_control").read_text()
    first = backend.create()
    second = backend.create()
    named = backend.create("named")
    assert (first.name, second.name, named.name) == (f"{token}/1", f"{token}/2", f"{token}/named")
    assert first.path == str(root / PREFIX / token / "1")
    assert first.controllers == frozenset(CONTROLLERS)
    # A fake directory keeps what was written: one write per level we created.
    assert (root / PREFIX / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (root / PREFIX / token / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (root / "cgroup.subtree_control").read_text() == root_control  # not ours: untouched
    assert not (root / PREFIX / token / "1" / "cgroup.subtree_control").exists()  # a leaf
    assert backend.session_dirs() == [str(root / PREFIX / token)]


def test_create_enables_only_what_is_missing(tmp_path: Path) -> None:
    backend, root, token = _fake_backend(tmp_path, enabled="memory pids")
    session = root / PREFIX / token
    session.mkdir(parents=True)
    (root / PREFIX / "cgroup.subtree_control").write_text("memory pids\n")  # a concurrent run's
    (session / "cgroup.subtree_control").write_text("pids\n")
    backend.create("x")
    assert (root / PREFIX / "cgroup.subtree_control").read_text() == "memory pids\n"
    assert (session / "cgroup.subtree_control").read_text() == "+memory"


def test_create_redoes_the_session_after_a_concurrent_cleanup(tmp_path: Path) -> None:
    backend, root, token = _fake_backend(tmp_path)
    backend.create("1").remove()
    shutil.rmtree(root / PREFIX)  # as a concurrent run's close() would (it was empty)
    group = backend.create("2")
    assert os.path.isdir(group.path)
    assert (root / PREFIX / token / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"


def test_create_error_when_the_parent_does_not_pass_controllers_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, root, _ = _fake_backend(tmp_path)
    real_write = v2._write  # type: ignore[attr-defined]

    def write(path: str, value: str) -> None:
        if path.endswith("cgroup.subtree_control"):
            raise CgroupError(errno.ENOENT, "the kernel says ENOENT")  # as cgroupfs does
        real_write(path, value)

    monkeypatch.setattr(v2, "_write", write)
    with pytest.raises(CgroupError) as exc:
        backend.create("x")
    assert exc.value.errno == errno.ENOENT
    control = root / PREFIX / "cgroup.subtree_control"
    assert exc.value.strerror == (
        f"cannot write '+cpu +memory +pids' to {control}: the parent group does not enable "
        "these controllers for its children"
    )


def test_create_gives_up_when_the_top_keeps_disappearing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, root, token = _fake_backend(tmp_path)

    def write(path: str, value: str) -> None:
        shutil.rmtree(root / PREFIX)  # a concurrent run's cleanup, every time
        raise CgroupError(errno.ENOENT, "gone")

    monkeypatch.setattr(v2, "_write", write)
    with pytest.raises(CgroupError) as exc:
        backend.create("x")
    assert exc.value.strerror == (
        f"cannot create {root / PREFIX / token}: {root / PREFIX} keeps disappearing"
    )


def test_create_and_close_fake(tmp_path: Path) -> None:
    backend, root, token = _fake_backend(tmp_path)
    groups = [backend.create() for _ in range(2)]
    backend.close()  # not empty yet: nothing removed
    assert os.path.isdir(root / PREFIX / token)
    for group in groups:
        group.remove()
    for name in ("cgroup.subtree_control",):  # a fake directory keeps its files
        os.unlink(root / PREFIX / token / name)
        os.unlink(root / PREFIX / name)
    backend.close()
    assert not (root / PREFIX).exists()
    assert (root / "cgroup.subtree_control").exists()


def test_create_error_names_the_path(tmp_path: Path) -> None:
    backend, root, _ = _fake_backend(tmp_path)
    blocker = root / PREFIX
    blocker.write_text("a file where the directory should be")
    with pytest.raises(CgroupError) as exc:
        backend.create("x")
    assert exc.value.errno == errno.EEXIST
    assert exc.value.strerror == f"cannot create {blocker}: File exists"


def test_sweep_fake(tmp_path: Path) -> None:
    backend, root, token = _fake_backend(tmp_path)
    _write_stat(tmp_path / "proc", 4242, 555)  # a live owner
    own = backend.create("1")
    top = root / PREFIX
    layout = {
        "4242.555": ["1"],  # live: untouched
        "4242.554": ["1", "2"],  # pid reused: stale
        "7777.1": ["3"],  # owner gone: stale
        "notours": ["x"],  # not a token: untouched
    }
    for owner, children in layout.items():
        for child in children:
            (top / owner / child).mkdir(parents=True)
    (top / "8888.2" / "busy").mkdir(parents=True)
    (top / "8888.2" / "busy" / "file").write_text("")  # rmdir: ENOTEMPTY
    (top / "8888.2" / "stray").write_text("")  # not a directory: skipped
    swept = backend.sweep()
    stale = [("4242.554", "1"), ("4242.554", "2"), ("7777.1", "3")]
    assert sorted(swept) == sorted(str(top / owner / child) for owner, child in stale)
    assert sorted(os.listdir(top)) == sorted(
        ["4242.555", "8888.2", "notours", token, "cgroup.subtree_control"]
    )
    assert os.listdir(top / "4242.555") == ["1"]
    assert os.listdir(top / "notours") == ["x"]
    assert sorted(os.listdir(top / "8888.2")) == ["busy", "stray"]
    assert os.path.isdir(own.path)


# -- a delegated base (rootless) on a fake cgroupfs that keeps v2's rules -----------------------


class FakeKernel:
    """The cgroup v2 rules a delegated base depends on, over plain directories under ``root``
    (so that rmdir works as on cgroupfs): each group's processes, the controllers it enables
    and those it may enable are kept here; ``<proc>/self/cgroup`` follows this process."""

    def __init__(self, root: Path, proc: Path) -> None:
        self.root = root
        self.proc = proc
        self.procs: dict[Path, list[int]] = {root: []}
        self.enabled: dict[Path, set[str]] = {root: set(CONTROLLERS)}
        self.available: dict[Path, set[str]] = {root: set(CONTROLLERS)}
        self.writes: list[tuple[str, str]] = []
        self.real_read = v2._read  # type: ignore[attr-defined]

    def mkdir(self, path: str) -> None:
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        if d not in self.procs:
            self.procs[d], self.enabled[d] = [], set()
            self.available[d] = set(self.enabled[d.parent])

    def _children(self, d: Path) -> list[Path]:
        return [e for e in d.iterdir() if e.is_dir()]

    def rmdir(self, path: str) -> bool:
        if self.procs.get(Path(path)):
            return False  # EBUSY
        try:
            os.rmdir(path)
        except OSError:
            return False
        return True

    def read(self, path: str) -> str:
        d, name = Path(path).parent, Path(path).name
        if d not in self.procs or not d.is_dir():
            return str(self.real_read(path))
        if name == "cgroup.procs":
            return "".join(f"{pid}\n" for pid in self.procs[d])
        if name == "cgroup.subtree_control":
            return " ".join(sorted(self.enabled[d])) + "\n"
        if name == "cgroup.controllers":
            return " ".join(sorted(self.available[d])) + "\n"
        return str(self.real_read(path))

    def write(self, path: str, value: str) -> None:
        d, name = Path(path).parent, Path(path).name
        self.writes.append((str(d.relative_to(self.root)), f"{name} {value}"))
        if name == "cgroup.procs":
            if self.enabled[d] and d != self.root:
                raise CgroupError(errno.EBUSY, f"{path}: the group enables controllers")
            pid = os.getpid() if value == "0" else int(value)
            for procs in self.procs.values():
                if pid in procs:
                    procs.remove(pid)
            self.procs[d].append(pid)
            if pid == os.getpid():
                (self.proc / "self" / "cgroup").write_text(f"0::/{d.relative_to(self.root)}\n")
        elif name == "cgroup.subtree_control":
            enabled = set(self.enabled[d])
            for word in value.split():
                controller = word[1:]
                if word[0] == "+" and self.procs[d]:
                    raise CgroupError(errno.EBUSY, f"{path}: the group holds processes")
                if word[0] == "+" and controller not in self.available[d]:
                    raise CgroupError(errno.ENOENT, f"{path}: {controller} not available")
                users = [c for c in self._children(d) if controller in self.enabled.get(c, ())]
                if word[0] == "-" and users:
                    raise CgroupError(errno.EBUSY, f"{path}: a child enables {controller}")
                (enabled.add if word[0] == "+" else enabled.discard)(controller)
            self.enabled[d] = enabled
        else:
            Path(path).write_text(value)

    def enter(self, group: str, pid: int | None = None) -> None:
        self.write(str(self.root / group / "cgroup.procs"), str(pid or os.getpid()))

    def tree(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_dir())


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    """A fake cgroup2 mount whose root passes cpu, memory and pids on, with a delegated
    group ``deleg``; this process's /proc (its stat for its token, its cgroup)."""
    proc = tmp_path / "proc"
    _write_stat(proc, os.getpid(), 1000)
    (proc / "self").mkdir()
    root = tmp_path / "cg"
    root.mkdir()
    fake = FakeKernel(root, proc)
    for module in (v2, v2_delegation):
        monkeypatch.setattr(module, "_makedirs", fake.mkdir)
        monkeypatch.setattr(module, "_rmdir_quietly", fake.rmdir)
        monkeypatch.setattr(module, "_read", fake.read)
        monkeypatch.setattr(module, "_write", fake.write)
    monkeypatch.setattr(v2_delegation, "_delegated", {})  # this process's record of what it changed
    fake.mkdir(str(root / "deleg"))
    return fake


def _delegated_backend(kernel: FakeKernel, base: str = "/deleg") -> CgroupV2:
    return CgroupV2.delegated(str(kernel.root), base, proc=str(kernel.proc))


def test_delegated_backend_uses_what_the_parent_passes_on(kernel: FakeKernel) -> None:
    kernel.available[kernel.root / "deleg"] |= {"cpuset", "io"}
    backend = _delegated_backend(kernel)
    assert backend.controllers == frozenset(CONTROLLERS)
    assert backend.hierarchies() == [str(kernel.root / "deleg")]
    token = f"{os.getpid()}.1000"
    assert backend.session_dirs() == [str(kernel.root / "deleg" / PREFIX / token)]
    kernel.available[kernel.root / "deleg"] = {"memory", "pids"}
    assert _delegated_backend(kernel).controllers == frozenset({"memory", "pids"})


def test_delegated_pytest_in_the_base_moves_into_a_leaf_then_back(kernel: FakeKernel) -> None:
    """The systemd-run scope: pytest is the base's process. It moves into a leaf of its own,
    enables the controllers, builds its groups; at the end everything is as it was."""
    kernel.enter("deleg")
    kernel.writes.clear()
    backend = _delegated_backend(kernel)
    group = backend.create()
    token = f"{os.getpid()}.1000"
    base = kernel.root / "deleg"
    assert kernel.enabled[base] == set(CONTROLLERS)
    assert (kernel.proc / "self" / "cgroup").read_text() == f"0::/deleg/{LEAF_PREFIX}{token}\n"
    assert group.path == str(base / PREFIX / token / "1")
    assert group.controllers == frozenset(CONTROLLERS)
    session = [f"deleg/{PREFIX}", f"deleg/{PREFIX}/{token}", f"deleg/{PREFIX}/{token}/1"]
    assert kernel.tree() == sorted(["deleg", *session, f"deleg/{LEAF_PREFIX}{token}"])
    backend.create()  # the base is ready: no more writes to it
    assert kernel.writes[:3] == [
        (f"deleg/{LEAF_PREFIX}{token}", f"cgroup.procs {os.getpid()}"),
        ("deleg", "cgroup.subtree_control +cpu +memory +pids"),
        (f"deleg/{PREFIX}", "cgroup.subtree_control +cpu +memory +pids"),
    ]
    assert len([w for w in kernel.writes if w[0] == "deleg"]) == 1
    os.rmdir(group.path)
    backend.close()
    assert kernel.tree() == ["deleg", f"deleg/{LEAF_PREFIX}{token}"]
    leave_delegated()
    assert kernel.tree() == ["deleg"]
    assert kernel.enabled[base] == set()
    assert kernel.procs[base] == [os.getpid()]
    assert (kernel.proc / "self" / "cgroup").read_text() == "0::/deleg\n"
    leave_delegated()  # nothing left to undo
    assert kernel.tree() == ["deleg"]


def test_delegated_pytest_below_the_base_stays_where_it_is(kernel: FakeKernel) -> None:
    kernel.mkdir(str(kernel.root / "deleg" / "shell"))
    kernel.enter("deleg/shell")
    kernel.writes.clear()
    backend = _delegated_backend(kernel)
    backend.create()
    assert (kernel.proc / "self" / "cgroup").read_text() == "0::/deleg/shell\n"
    assert not [w for w in kernel.writes if w[1].startswith("cgroup.procs")]
    backend.close()
    leave_delegated()
    assert kernel.enabled[kernel.root / "deleg"] == set()
    assert kernel.tree() == ["deleg", "deleg/shell"]


def test_delegated_base_with_other_processes_is_refused_and_left_as_found(
    kernel: FakeKernel,
) -> None:
    kernel.enter("deleg")
    kernel.enter("deleg", 4242)  # a shell that started pytest, say
    backend = _delegated_backend(kernel)
    with pytest.raises(CgroupError) as exc:
        backend.create()
    assert exc.value.errno == errno.EBUSY
    control = kernel.root / "deleg" / "cgroup.subtree_control"
    assert exc.value.strerror == (
        f"cannot write '+cpu +memory +pids' to {control}: the delegated cgroup holds processes "
        f"other than pytest (4242), and controllers can be enabled only in a cgroup without "
        "processes"
    )
    assert kernel.tree() == ["deleg"]  # back in the base, the leaf removed
    assert sorted(kernel.procs[kernel.root / "deleg"]) == sorted([4242, os.getpid()])
    leave_delegated()
    assert kernel.tree() == ["deleg"]


def test_delegated_parent_without_cpu_gives_memory_and_pids(kernel: FakeKernel) -> None:
    kernel.available[kernel.root / "deleg"] = {"memory", "pids"}
    kernel.enter("deleg")
    backend = _delegated_backend(kernel)
    group = backend.create()
    assert group.controllers == frozenset({"memory", "pids"})
    assert kernel.enabled[kernel.root / "deleg"] == {"memory", "pids"}
    group.set_limits(Limits(cpu=0.5, mem=64 * MiB, pids=8))  # the cpu cap cannot be set
    assert not (Path(group.path) / "cpu.max").exists()
    assert (Path(group.path) / "memory.max").read_text() == str(64 * MiB)


def test_delegated_undo_waits_for_another_run_under_the_same_base(kernel: FakeKernel) -> None:
    kernel.enter("deleg")
    backend = _delegated_backend(kernel)
    os.rmdir(backend.create().path)
    backend.close()
    other = kernel.root / "deleg" / PREFIX / "1.1"  # another run's session, still in use
    kernel.mkdir(str(other.parent))
    kernel.write(str(other.parent / "cgroup.subtree_control"), "+memory")
    kernel.mkdir(str(other))
    leave_delegated()  # cannot disable memory: pytest stays in its leaf, no error
    token = f"{os.getpid()}.1000"
    assert f"deleg/{LEAF_PREFIX}{token}" in kernel.tree()
    assert (kernel.proc / "self" / "cgroup").read_text() == f"0::/deleg/{LEAF_PREFIX}{token}\n"


def test_delegated_record_is_undone_only_by_the_process_that_made_it(kernel: FakeKernel) -> None:
    kernel.enter("deleg")
    os.rmdir(_delegated_backend(kernel).create().path)
    record = v2_delegation._delegated[str(kernel.root / "deleg")]
    record.pid = os.getpid() + 1  # as a forked child of pytest sees it
    leave_delegated()
    assert kernel.enabled[kernel.root / "deleg"] == set(CONTROLLERS)


def test_delegated_sweep_removes_stale_leaves_and_groups(kernel: FakeKernel) -> None:
    _write_stat(kernel.proc, 4242, 555)  # a live run
    base = kernel.root / "deleg"
    kernel.mkdir(str(base / "sub"))
    kernel.enter("deleg/sub")
    backend = _delegated_backend(kernel)
    own = backend.create()
    for name in ("pytest-isolate-4242.555", "pytest-isolate-4242.554", "pytest-isolate-7777.1",
                 "pytest-isolate-busy.1", "pytest-isolate-8888.2", "other"):  # fmt: skip
        kernel.mkdir(str(base / name))
    kernel.enter("deleg/pytest-isolate-8888.2", 8888)  # a process of that run lives on
    (base / PREFIX / "7777.1" / "3").mkdir(parents=True)  # a group of a run that is gone
    swept = backend.sweep()
    stale = (f"{PREFIX}/7777.1/3", "pytest-isolate-4242.554", "pytest-isolate-7777.1")
    assert sorted(swept) == sorted(str(base / p) for p in stale)
    assert os.listdir(base / PREFIX) == [f"{os.getpid()}.1000"]
    left = {p.name for p in base.iterdir() if p.is_dir()}
    assert left == {PREFIX, "sub", "other", "pytest-isolate-4242.555", "pytest-isolate-busy.1",
                    "pytest-isolate-8888.2"}  # fmt: skip
    assert os.path.isdir(own.path)


@pytest.mark.parametrize(
    ("name", "leaf"),
    [("pytest-isolate-12.345", True), ("pytest-isolate-deleg", False), ("pytest-isolate", False),
     ("pytest-isolate-1.2.3", False), ("x-pytest-isolate-1.2", False)],
)  # fmt: skip
def test_is_leaf_name(name: str, leaf: bool) -> None:
    assert is_leaf_name(name) is leaf


def test_own_cgroup(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "cgroup").write_text("0::/user.slice/x.scope\n")
    assert own_cgroup(str(tmp_path)) == "/user.slice/x.scope"
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text("12:pids:/a\n1:name=systemd:/b\n0::/\n")
    assert own_cgroup(str(tmp_path), 7) == "/"
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "cgroup").write_text("12:pids:/a\n")  # v1 only
    assert own_cgroup(str(tmp_path), 8) is None
    assert own_cgroup(str(tmp_path), 9) is None


# -- the real kernel (cgroup v2: run in the guest of .ci/v2-guest) --------------------------------

GroupFactory = Callable[[], GroupV2]


@pytest.fixture
def real_backend() -> Iterator[CgroupV2]:
    backend = detect()
    assert isinstance(backend, CgroupV2)
    yield backend
    backend.close()


@pytest.fixture
def new_group(real_backend: CgroupV2) -> Iterator[GroupFactory]:
    groups: list[GroupV2] = []

    def make() -> GroupV2:
        group = real_backend.create(f"unit-{uuid.uuid4().hex[:12]}")
        groups.append(group)
        return group

    yield make
    for group in groups:
        group.kill()
        group.remove()
        assert not os.path.exists(group.path)


def _fork_into(group: GroupV2, body: Callable[[], int], ready: int | None = None) -> int:
    """Fork a child that joins ``group`` (writes 0 to its procs file), then runs ``body``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 70
        try:
            for path in group.procs_files():
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)
            if ready is not None:
                os.write(ready, b"j")
            code = body()
        except BaseException:
            code = 71
        finally:
            os._exit(code)
    return pid


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@needs_cgroup_v2
def test_real_group_layout_and_limits(real_backend: CgroupV2, new_group: GroupFactory) -> None:
    group = new_group()
    token = owner_token()
    mount = real_backend.hierarchies()[0]
    leaf = group.name.split("/")[1]
    assert group.name == f"{token}/{leaf}"
    assert group.path == os.path.join(mount, PREFIX, token, leaf)
    for level in (os.path.join(mount, PREFIX), os.path.join(mount, PREFIX, token)):
        assert set(_read(f"{level}/cgroup.subtree_control").split()) >= set(CONTROLLERS)
        assert _read(f"{level}/cgroup.procs") == ""  # no internal processes
    assert set(_read(f"{group.path}/cgroup.controllers").split()) >= set(CONTROLLERS)
    group.set_limits(Limits(cpu=0.3, mem=64 * MiB, pids=50))
    assert _read(f"{group.path}/cpu.max") == "30000 100000\n"
    assert _read(f"{group.path}/memory.max") == "67108864\n"
    if os.path.exists(f"{group.path}/memory.swap.max"):
        assert _read(f"{group.path}/memory.swap.max") == "0\n"
    assert _read(f"{group.path}/memory.oom.group") == "1\n"
    assert _read(f"{group.path}/pids.max") == "50\n"
    assert group.pids() == set()
    usage = group.read_usage()
    assert (usage.oom_kills, usage.nr_throttled, usage.pids_limit_hits) == (0, 0, 0)
    assert usage.peak_mem in (None, 0)


@needs_cgroup_v2
def test_real_cpu_cap_throttles(new_group: GroupFactory) -> None:
    group = new_group()
    group.set_limits(Limits(cpu=0.2))
    burn = 0.3  # seconds of CPU

    def body() -> int:
        end = time.process_time() + burn
        while time.process_time() < end:
            pass
        return 0

    status = reap(_fork_into(group, body), timeout=120)
    assert os.waitstatus_to_exitcode(status) == 0
    usage = group.read_usage()
    assert usage.nr_throttled > 0, usage
    assert usage.throttled > 0, usage
    assert usage.cpu_user + usage.cpu_system >= burn * 0.9, usage
    assert usage.peak_pids in (None, 1)
    assert (usage.oom_kills, usage.pids_limit_hits) == (0, 0)


def _sleep_30() -> int:  # pragma: no cover - runs in the child
    time.sleep(30)
    return 0


@needs_cgroup_v2
def test_real_cgroup_kill_and_remove(new_group: GroupFactory) -> None:
    group = new_group()
    r, w = os.pipe()
    try:
        pid = _fork_into(group, _sleep_30, ready=w)
        os.close(w)
        w = -1
        assert select.select([r], [], [], 60)[0] == [r]
        assert os.read(r, 1) == b"j"
        assert group.pids() == {pid}
        assert "populated 1" in _read(f"{group.path}/cgroup.events")
        assert os.path.exists(f"{group.path}/cgroup.kill")
        group.kill()
        assert group.pids() == set()
        assert "populated 0" in _read(f"{group.path}/cgroup.events")
        status = reap(pid, timeout=60)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        group.remove()
        assert not os.path.exists(group.path)
    finally:
        os.close(r)
        if w != -1:
            os.close(w)


@needs_cgroup_v2
def test_real_kill_reaches_stopped_processes_and_child_groups(new_group: GroupFactory) -> None:
    group = new_group()
    r, w = os.pipe()
    sub = os.path.join(group.path, "sub")
    os.mkdir(sub)  # a group below ours (the leaf holds no process, so this is allowed)

    def body() -> int:  # pragma: no cover - runs in the child
        with open(os.path.join(sub, "cgroup.procs"), "w") as f:
            f.write("0")
        os.write(w, b"s")
        os.kill(os.getpid(), signal.SIGSTOP)
        return 0

    pid = _fork_into(group, body)
    try:
        assert select.select([r], [], [], 60)[0] == [r]
        assert os.read(r, 1) == b"s"
        assert group.pids() == {pid}
        group.kill()
        status = reap(pid, timeout=60)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        group.remove()
        assert not os.path.exists(group.path)
    finally:
        os.close(r)
        os.close(w)


@needs_cgroup_v2
def test_real_oom_kill_is_counted(new_group: GroupFactory) -> None:
    group = new_group()
    limit = 32 * MiB
    group.set_limits(Limits(mem=limit))

    def body() -> int:
        size = 256 * MiB
        block = bytearray(size)
        block[::4096] = b"\x01" * len(range(0, size, 4096))
        return 0

    status = reap(_fork_into(group, body), timeout=120)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    events = _read(f"{group.path}/memory.events").splitlines()
    assert "oom_group_kill 1" in events, events
    assert "oom_kill 2" in events, events  # the victim, twice (see _processes_killed)
    usage = group.read_usage()
    assert usage.oom_kills == 1
    assert usage.peak_mem is not None and limit // 2 < usage.peak_mem <= limit, usage


@needs_cgroup_v2
def test_real_pids_cap_refuses_forks(new_group: GroupFactory) -> None:
    group = new_group()
    group.set_limits(Limits(pids=3))

    def body() -> int:
        refused = 0
        children = []
        for _ in range(5):
            try:
                child = os.fork()
            except BlockingIOError:
                refused += 1
                continue
            if child == 0:
                time.sleep(1)
                os._exit(0)
            children.append(child)
        for child in children:
            os.waitpid(child, 0)
        return refused

    status = reap(_fork_into(group, body), timeout=120)
    assert os.waitstatus_to_exitcode(status) == 3  # 1 + 2 children fit under pids=3
    usage = group.read_usage()
    assert usage.pids_limit_hits == 3
    assert usage.peak_pids in (None, 3)


@needs_cgroup_v2
def test_real_sweep(real_backend: CgroupV2) -> None:
    mount = real_backend.hierarchies()[0]
    top = os.path.join(mount, PREFIX)
    dead_owner = f"{_unused_pid()}.12345"
    sleeper = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
    live = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
    live_owner = owner_token(live.pid)
    reused_owner = f"{live.pid}.1"  # that pid, but another start time: stale
    made: list[str] = []
    reaper = threading.Thread(target=sleeper.wait, daemon=True)
    try:
        real_backend.create("unit-session")  # our levels exist, controllers enabled
        for owner in (dead_owner, live_owner, reused_owner):
            path = os.path.join(top, owner, "1")
            os.makedirs(path)
            made.append(path)
        with open(os.path.join(top, dead_owner, "1", "cgroup.procs"), "w") as f:
            f.write(str(sleeper.pid))
        assert _read(os.path.join(top, dead_owner, "1", "cgroup.procs")).split() == [
            str(sleeper.pid)
        ]
        reaper.start()
        swept = real_backend.sweep()
        reaper.join(30)
        assert sleeper.returncode == -signal.SIGKILL
        mine = {dead_owner, reused_owner, live_owner}
        assert sorted(p for p in swept if p.split("/")[-2] in mine) == sorted(
            os.path.join(top, owner, "1") for owner in (dead_owner, reused_owner)
        )
        assert not os.path.exists(os.path.join(top, dead_owner))
        assert not os.path.exists(os.path.join(top, reused_owner))
        assert os.path.isdir(os.path.join(top, live_owner, "1"))
        assert live.poll() is None
    finally:
        for proc in (sleeper, live):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if reaper.is_alive():
            reaper.join(30)
        for path in made:
            for d in (path, os.path.dirname(path)):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
        try:
            os.rmdir(os.path.join(top, owner_token(), "unit-session"))
        except FileNotFoundError:
            pass


REAL_DELEGATED_CHILD = """
import json, os, sys
from pytest_isolate.cgroups.v2 import CgroupV2
from pytest_isolate.cgroups.v2_delegation import LEAF_PREFIX, leave_delegated, own_cgroup

mount, base, stale = sys.argv[1:]
d = mount + base
with open(f"{d}/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))  # pytest started in the delegated scope
os.mkdir(f"{d}/{LEAF_PREFIX}{stale}")  # the leaf a killed run left
backend = CgroupV2.delegated(mount, base)
group = backend.create()
caps = ("cpu.max", "memory.max", "pids.max")
seen = {"pytest": own_cgroup(), "group": group.path,
        "enabled": open(f"{d}/cgroup.subtree_control").read().split(),
        "files": sorted(f for f in os.listdir(group.path) if f in caps)}
os.makedirs(f"{d}/pytest-isolate/{stale}/3")  # a group of the killed run's session
seen["swept"] = sorted(backend.sweep())
group.remove()
backend.close()
leave_delegated()
seen["after"] = own_cgroup()
seen["left"] = sorted(e.name for e in os.scandir(d) if e.is_dir())
seen["enabled_after"] = open(f"{d}/cgroup.subtree_control").read().split()
print(json.dumps(seen))
"""


@needs_cgroup_v2
def test_real_delegated_base_round_trip() -> None:
    """The real kernel's rules, as root: a process in a delegated base moves into its leaf,
    enables the controllers, builds a group, sweeps what a killed run left there, and
    leaves the base as it found it."""
    mount = detect().hierarchies()[0]  # type: ignore[union-attr]
    base = f"/{PREFIX}-unit-{uuid.uuid4().hex[:12]}"
    stale = f"{_unused_pid()}.1"
    os.mkdir(mount + base)
    try:
        result = subprocess.run(
            [sys.executable, "-c", REAL_DELEGATED_CHILD, mount, base, stale],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)
        assert os.path.dirname(seen["pytest"]) == base
        assert is_leaf_name(os.path.basename(seen["pytest"]))
        assert seen["group"].startswith(f"{mount}{base}/{PREFIX}/")
        assert seen["enabled"] == ["cpu", "memory", "pids"]
        assert seen["files"] == ["cpu.max", "memory.max", "pids.max"]
        assert seen["swept"] == sorted(
            [f"{mount}{base}/{PREFIX}/{stale}/3", f"{mount}{base}/{LEAF_PREFIX}{stale}"]
        )
        assert (seen["after"], seen["left"], seen["enabled_after"]) == (base, [], [])
    finally:
        for dirpath, _, _ in sorted(os.walk(mount + base), key=lambda t: -t[0].count("/")):
            os.rmdir(dirpath)
