"""Unit tests for the cgroup v1 backend (``pytest_isolate.cgroups.v1``).

Most tests run against fake mountinfo text, a fake /proc and a fake cgroupfs tree under
``tmp_path``. The ``needs_cgroup_v1`` tests use the real kernel, but only ever create,
touch and remove groups under ``<hierarchy>/pytest-isolate/`` and only signal processes
that they started themselves.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import needs_cgroup_v1, reap, write_stat
from pytest_isolate.cgroups import PREFIX, CgroupError, Limits, Usage
from pytest_isolate.cgroups.owners import owner_token
from pytest_isolate.cgroups.v1 import CONTROLLERS, CgroupV1, GroupV1
from pytest_isolate.mountinfo import MountEntry, parse_mountinfo

MiB = 2**20

# -- CgroupV1.from_mounts ------------------------------------------------------------------------


def _cgroup_entry(
    mount_id: int, mount_point: str, *options: str, fstype: str = "cgroup"
) -> MountEntry:
    return MountEntry(mount_id, 30, "/", mount_point, frozenset({"rw"}), fstype, fstype,
                      frozenset({"rw", *options}))  # fmt: skip


def test_from_mounts_co_mounted_cpu_cpuacct(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu,cpuacct"
    memory = tmp_path / "memory"
    memory_again = tmp_path / "memory2"
    pids = tmp_path / "pids"
    unified = tmp_path / "unified"
    cpuset = tmp_path / "cpuset"
    systemd = tmp_path / "systemd"
    for d in (cpu, memory, memory_again, pids, unified, cpuset, systemd):
        d.mkdir()
    entries = [
        _cgroup_entry(1, str(cpuset), "cpuset"),
        _cgroup_entry(2, str(cpu), "cpu", "cpuacct"),
        _cgroup_entry(3, str(memory), "memory"),
        _cgroup_entry(4, str(memory_again), "memory"),  # first mount of a controller wins
        _cgroup_entry(5, str(pids), "pids"),
        _cgroup_entry(6, str(unified), "nsdelegate", "memory", fstype="cgroup2"),
        _cgroup_entry(7, str(systemd), "name=systemd"),
    ]
    backend = CgroupV1.from_mounts(entries)
    assert backend is not None
    assert backend.version == 1
    assert backend.controllers == frozenset({"cpu", "cpuacct", "memory", "pids"})
    assert backend.hierarchies() == sorted([str(cpu), str(memory), str(pids)])


def test_from_mounts_skips_unwritable_and_missing(tmp_path: Path) -> None:
    memory = tmp_path / "memory"
    memory.mkdir()
    entries = [
        _cgroup_entry(1, str(tmp_path / "missing-cpu"), "cpu"),
        _cgroup_entry(2, str(memory), "memory"),
    ]
    backend = CgroupV1.from_mounts(entries)
    assert backend is not None
    assert backend.controllers == frozenset({"memory"})
    assert backend.hierarchies() == [str(memory)]


def test_from_mounts_none_without_v1(tmp_path: Path) -> None:
    assert CgroupV1.from_mounts([]) is None
    unified = tmp_path / "unified"
    unified.mkdir()
    assert CgroupV1.from_mounts([_cgroup_entry(1, str(unified), "cpu", fstype="cgroup2")]) is None
    assert CgroupV1.from_mounts([_cgroup_entry(1, str(tmp_path / "nope"), "cpu")]) is None


def test_from_mounts_parsed_text(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu,cpuacct"
    cpu.mkdir()
    text = (
        f"31 30 0:27 / {cpu} rw,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct\n"
        f"33 30 0:29 / {tmp_path} rw - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    backend = CgroupV1.from_mounts(parse_mountinfo(text))
    assert backend is not None
    assert backend.controllers == frozenset({"cpu", "cpuacct"})
    assert backend.hierarchies() == [str(cpu)]


# -- GroupV1 on a fake cgroupfs ------------------------------------------------------------------


def _fake_group(root: Path, name: str = "g", co_mounted: bool = False) -> GroupV1:
    dirs = {}
    for controller in CONTROLLERS:
        hierarchy = "cpu,cpuacct" if co_mounted and controller in ("cpu", "cpuacct") else controller
        d = root / hierarchy / PREFIX / "1.1" / name
        d.mkdir(parents=True, exist_ok=True)
        dirs[controller] = str(d)
    return GroupV1(f"1.1/{name}", dirs)


def _files(group: GroupV1, files: dict[str, dict[str, str]]) -> None:
    for controller, contents in files.items():
        for fname, text in contents.items():
            Path(group.dirs()[controller], fname).write_text(text)


USAGE_FILES = {
    "cpuacct": {
        "cpuacct.usage": "3000000000\n",
        "cpuacct.usage_user": "1000000000\n",
        "cpuacct.usage_sys": "1000000000\n",
    },
    "cpu": {
        "cpu.stat": "nr_periods 50\nnr_throttled 7\nthrottled_time 250000000\n"
        "nr_bursts 0\nburst_time 0\n",
    },
    "memory": {
        "memory.max_usage_in_bytes": "134217728\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    },
    "pids": {"pids.peak": "17\n", "pids.events": "max 3\n"},
}


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


def test_read_usage_reads_no_throttling_without_a_cpu_cap(tmp_path: Path) -> None:
    # Without a cpu cap the test process does not join the cpu group (needed_joins): its
    # counters belong to nobody, and are not read.
    group = _fake_group(tmp_path)
    _files(group, USAGE_FILES)
    group.set_limits(Limits(cpu=None, mem=None, pids=None))
    usage = group.read_usage()
    assert (usage.nr_throttled, usage.throttled, usage.peak_pids) == (0, 0.0, 17)
    _files(group, {"cpu": {"cpu.cfs_period_us": "", "cpu.cfs_quota_us": ""}})
    group.set_limits(Limits(cpu=0.5, mem=None, pids=None))
    assert (group.read_usage().nr_throttled, group.read_usage().throttled) == (7, 0.25)


def test_read_usage_scales_tick_split_to_exact_total(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    _files(group, USAGE_FILES)
    _files(group, {"cpuacct": {"cpuacct.usage": "2000000000\n",
                               "cpuacct.usage_user": "300000000\n",
                               "cpuacct.usage_sys": "100000000\n"}})  # fmt: skip
    usage = group.read_usage()
    assert usage.cpu_user == pytest.approx(1.5, abs=1e-12)
    assert usage.cpu_system == pytest.approx(0.5, abs=1e-12)


def test_read_usage_no_ticks_counts_as_user(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    _files(group, USAGE_FILES)
    _files(group, {"cpuacct": {"cpuacct.usage": "5000000\n", "cpuacct.usage_user": "0\n",
                               "cpuacct.usage_sys": "0\n"}})  # fmt: skip
    usage = group.read_usage()
    assert (usage.cpu_user, usage.cpu_system) == (0.005, 0.0)


def test_read_usage_without_pids_peak(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    _files(group, USAGE_FILES)
    os.unlink(os.path.join(group.dirs()["pids"], "pids.peak"))
    usage = group.read_usage()
    assert usage.peak_pids is None
    assert usage.pids_limit_hits == 3


def test_read_usage_missing_keys_default_to_zero(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    _files(group, USAGE_FILES)
    oom_control = "oom_kill_disable 0\nunder_oom 0\n"
    _files(group, {"cpu": {"cpu.stat": "nr_periods 0\n"}, "pids": {"pids.events": ""},
                   "memory": {"memory.oom_control": oom_control}})  # fmt: skip
    usage = group.read_usage()
    assert (usage.nr_throttled, usage.throttled, usage.oom_kills, usage.pids_limit_hits) == (
        0, 0.0, 0, 0,
    )  # fmt: skip


def test_read_usage_memory_only(tmp_path: Path) -> None:
    d = tmp_path / "memory"
    d.mkdir()
    (d / "memory.max_usage_in_bytes").write_text("4096\n")
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 1\noom_kill 1\n")
    assert GroupV1("x", {"memory": str(d)}).read_usage() == Usage(peak_mem=4096, oom_kills=1)


def test_read_usage_nothing() -> None:
    assert GroupV1("x", {}).read_usage() == Usage()


LIMIT_FILES = {
    "cpu": ["cpu.cfs_period_us", "cpu.cfs_quota_us"],
    "memory": ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.swappiness"],
    "pids": ["pids.max"],
}


def _limit_group(root: Path, memsw: bool = True) -> GroupV1:
    group = _fake_group(root)
    for controller, names in LIMIT_FILES.items():
        for name in names:
            if name == "memory.memsw.limit_in_bytes" and not memsw:
                continue
            Path(group.dirs()[controller], name).write_text("")
    return group


def _contents(group: GroupV1) -> dict[str, str]:
    out = {}
    for controller, names in LIMIT_FILES.items():
        for name in names:
            path = Path(group.dirs()[controller], name)
            if path.exists():
                out[name] = path.read_text()
    return out


def test_set_limits_writes_files(tmp_path: Path) -> None:
    group = _limit_group(tmp_path)
    group.set_limits(Limits(cpu=0.3, mem=64 * MiB, pids=50))
    assert _contents(group) == {
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "30000",
        "memory.limit_in_bytes": "67108864",
        "memory.memsw.limit_in_bytes": "67108864",
        "memory.swappiness": "",
        "pids.max": "50",
    }


def test_set_limits_without_memsw_sets_swappiness(tmp_path: Path) -> None:
    group = _limit_group(tmp_path, memsw=False)
    group.set_limits(Limits(mem=128 * MiB))
    assert _contents(group) == {
        "cpu.cfs_period_us": "",
        "cpu.cfs_quota_us": "",
        "memory.limit_in_bytes": "134217728",
        "memory.swappiness": "0",
        "pids.max": "",
    }


@pytest.mark.parametrize(
    ("cpu", "quota"), [(2, "200000"), (0.01, "1000"), (0.333, "33300"), (1.5, "150000")]
)
def test_set_limits_cpu_quota(tmp_path: Path, cpu: float, quota: str) -> None:
    group = _limit_group(tmp_path)
    group.set_limits(Limits(cpu=cpu))
    contents = _contents(group)
    assert (contents["cpu.cfs_period_us"], contents["cpu.cfs_quota_us"]) == ("100000", quota)


@pytest.mark.parametrize(
    ("cpu", "period", "written"),
    [(0.05, 1.0, ("1000000", "50000")), (0.5, 0.01, ("10000", "5000")),
     (0.001, 1.0, ("1000000", "1000"))],
)  # fmt: skip
def test_set_limits_cpu_period(
    tmp_path: Path, cpu: float, period: float, written: tuple[str, str]
) -> None:
    group = _limit_group(tmp_path)
    group.set_limits(Limits(cpu=cpu, cpu_period=period))
    contents = _contents(group)
    assert (contents["cpu.cfs_period_us"], contents["cpu.cfs_quota_us"]) == written


def test_set_limits_none_writes_nothing(tmp_path: Path) -> None:
    group = _limit_group(tmp_path)
    group.set_limits(Limits())
    assert set(_contents(group).values()) == {""}


def test_set_limits_write_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group = _limit_group(tmp_path)
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "pytest_isolate.cgroups.v1._write",
        lambda path, value: calls.append((os.path.basename(path), value)),
    )
    group.set_limits(Limits(cpu=0.5, mem=8 * MiB, pids=7))
    # The period before the quota; memsw (which must stay >= the limit) after the limit.
    assert calls == [
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "50000"),
        ("memory.limit_in_bytes", "8388608"),
        ("memory.memsw.limit_in_bytes", "8388608"),
        ("pids.max", "7"),
    ]


def test_set_limits_only_present_controllers(tmp_path: Path) -> None:
    d = tmp_path / "pids"
    d.mkdir()
    (d / "pids.max").write_text("")
    GroupV1("x", {"pids": str(d)}).set_limits(Limits(cpu=1, mem=64 * MiB, pids=9))
    assert (d / "pids.max").read_text() == "9"
    assert sorted(os.listdir(d)) == ["pids.max"]


def test_set_limits_error_names_file(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    path = os.path.join(group.dirs()["pids"], "pids.max")
    with pytest.raises(CgroupError) as exc:
        group.set_limits(Limits(pids=50))
    assert exc.value.errno == errno.ENOENT
    assert exc.value.strerror == f"cannot write '50' to {path}: No such file or directory"
    assert isinstance(exc.value, OSError)


def test_dirs_and_procs_files_co_mounted(tmp_path: Path) -> None:
    group = _fake_group(tmp_path, co_mounted=True)
    dirs = group.dirs()
    assert dirs["cpu"] == dirs["cpuacct"] == str(tmp_path / "cpu,cpuacct" / PREFIX / "1.1" / "g")
    assert group.procs_files() == sorted(
        os.path.join(d, "tasks") for d in {dirs["cpu"], dirs["memory"], dirs["pids"]}
    )
    assert len(group.procs_files()) == 3
    dirs["cpu"] = "changed"
    assert group.dirs()["cpu"] != "changed"  # a copy


def test_needed_joins_skip_a_cpu_only_hierarchy_without_a_cpu_cap(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    files = group.procs_files()
    cpu_only = files.index(os.path.join(group.dirs()["cpu"], "tasks"))
    needed = group.needed_joins(Limits(mem=64 * MiB))
    assert needed == [i != cpu_only for i in range(len(files))]
    assert group.needed_joins(Limits(cpu=0.5)) == [True] * len(files)


def test_needed_joins_keep_cpu_co_mounted_with_cpuacct(tmp_path: Path) -> None:
    group = _fake_group(tmp_path, co_mounted=True)
    assert group.needed_joins(Limits()) == [True, True, True]  # cpuacct accounts the CPU


def test_pids_fake(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    Path(group.dirs()["cpu"], "cgroup.procs").write_text("12\n34\n")
    Path(group.dirs()["memory"], "cgroup.procs").write_text("34\n56\n")
    Path(group.dirs()["pids"], "cgroup.procs").write_text("")
    assert group.pids() == {12, 34, 56}


def test_pids_include_groups_below(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    sub = Path(group.dirs()["memory"], "sub", "deeper")
    sub.mkdir(parents=True)
    (sub / "cgroup.procs").write_text("78\n")
    Path(group.dirs()["memory"], "cgroup.procs").write_text("12\n")
    assert group.pids() == {12, 78}


def test_remove_groups_below_first(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    Path(group.dirs()["pids"], "a", "b").mkdir(parents=True)
    Path(group.dirs()["pids"], "c").mkdir()
    group.remove()
    assert not any(os.path.exists(d) for d in group.dirs().values())


def test_kill_empty_group_returns(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    group.kill()  # no cgroup.procs at all
    for d in set(group.dirs().values()):
        Path(d, "cgroup.procs").write_text("")
    group.kill()


def _unused_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1  # no process can have this pid


def test_kill_gives_up_after_deadline(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    ghost = _unused_pid()
    Path(group.dirs()["memory"], "cgroup.procs").write_text(f"{ghost}\n")
    with pytest.raises(CgroupError) as exc:
        group.kill(deadline=0.01)
    assert exc.value.errno == errno.EBUSY
    assert exc.value.strerror == f"processes [{ghost}] survive in 1.1/g"


def test_remove_fake(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    group.remove()
    assert not any(os.path.exists(d) for d in group.dirs().values())
    group.remove()  # already gone: fine


def test_remove_non_empty_fails_at_once(tmp_path: Path) -> None:
    group = _fake_group(tmp_path)
    d = group.dirs()["memory"]
    Path(d, "leftover").write_text("")
    start = time.monotonic()
    with pytest.raises(CgroupError) as exc:
        group.remove()
    assert time.monotonic() - start < 1
    assert exc.value.errno == errno.ENOTEMPTY
    assert exc.value.strerror == f"cannot remove {d}: Directory not empty"


# -- CgroupV1 on a fake tree ---------------------------------------------------------------------


def _fake_backend(tmp_path: Path) -> tuple[CgroupV1, Path, str]:
    proc = tmp_path / "proc"
    write_stat(proc, os.getpid(), 1000)
    root = tmp_path / "cg"
    mounts = {}
    for controller in CONTROLLERS:
        hierarchy = "cpu,cpuacct" if controller in ("cpu", "cpuacct") else controller
        (root / hierarchy).mkdir(parents=True, exist_ok=True)
        mounts[controller] = str(root / hierarchy)
    return CgroupV1(mounts, proc=str(proc)), root, f"{os.getpid()}.1000"


def test_create_and_close_fake(tmp_path: Path) -> None:
    backend, root, token = _fake_backend(tmp_path)
    assert backend.hierarchies() == [str(root / h) for h in ("cpu,cpuacct", "memory", "pids")]
    assert backend.session_dirs() == [str(root / h / PREFIX / token)
                                      for h in ("cpu,cpuacct", "memory", "pids")]  # fmt: skip
    first = backend.create()
    second = backend.create()
    named = backend.create("named")
    assert (first.name, second.name, named.name) == (f"{token}/1", f"{token}/2", f"{token}/named")
    assert first.dirs() == {
        "cpu": str(root / "cpu,cpuacct" / PREFIX / token / "1"),
        "cpuacct": str(root / "cpu,cpuacct" / PREFIX / token / "1"),
        "memory": str(root / "memory" / PREFIX / token / "1"),
        "pids": str(root / "pids" / PREFIX / token / "1"),
    }
    assert all(os.path.isdir(d) for d in first.dirs().values())
    again = backend.create("named")  # existing directories are reused
    assert again.dirs() == named.dirs()
    first.remove()
    backend.close()  # removes the groups still there too (one being built at SIGTERM)
    assert not any(os.path.exists(d) for d in [*second.dirs().values(), *named.dirs().values()])
    assert not any(os.path.exists(d) for d in backend.session_dirs())
    assert not any(os.path.exists(root / h / PREFIX) for h in ("cpu,cpuacct", "memory", "pids"))


def test_create_error(tmp_path: Path) -> None:
    backend, root, token = _fake_backend(tmp_path)
    blocker = root / "memory" / PREFIX
    blocker.write_text("a file where the directory should be")
    with pytest.raises(CgroupError) as exc:
        backend.create("x")
    assert exc.value.errno == errno.ENOTDIR
    assert exc.value.strerror == f"cannot create {blocker}/{token}/x: Not a directory"


def test_sweep_fake(tmp_path: Path) -> None:
    backend, _, token = _fake_backend(tmp_path)
    proc = tmp_path / "proc"
    write_stat(proc, 4242, 555)  # a live owner
    own = backend.create("1")
    layout = {
        "4242.555": ["1"],  # live: untouched
        "4242.554": ["1", "2"],  # pid reused: stale
        "7777.1": ["3"],  # owner gone: stale
        "notours": ["x"],  # not a token: untouched
    }
    hierarchies = backend.hierarchies()
    for h in hierarchies:
        for owner, children in layout.items():
            for child in children:
                os.makedirs(os.path.join(h, PREFIX, owner, child))
        os.makedirs(os.path.join(h, PREFIX, "8888.2", "busy"))
        Path(h, PREFIX, "8888.2", "busy", "file").write_text("")  # rmdir: ENOTEMPTY
        Path(h, PREFIX, "8888.2", "stray").write_text("")  # not a directory: skipped
    swept = backend.sweep()
    assert sorted(swept) == sorted(
        os.path.join(h, PREFIX, owner, child)
        for h in hierarchies
        for owner, child in (("4242.554", "1"), ("4242.554", "2"), ("7777.1", "3"))
    )
    for h in hierarchies:
        top = os.path.join(h, PREFIX)
        assert sorted(os.listdir(top)) == sorted(["4242.555", "8888.2", "notours", token])
        assert os.listdir(os.path.join(top, "4242.555")) == ["1"]
        assert os.listdir(os.path.join(top, "notours")) == ["x"]
        assert sorted(os.listdir(os.path.join(top, "8888.2"))) == ["busy", "stray"]
    assert all(os.path.isdir(d) for d in own.dirs().values())


# -- the real kernel -----------------------------------------------------------------------------

GroupFactory = Callable[[], GroupV1]


def _real_mounts() -> dict[str, str]:
    with open("/proc/self/mountinfo") as f:
        entries = parse_mountinfo(f.read())
    mounts: dict[str, str] = {}
    for e in entries:
        if e.fstype == "cgroup":
            for c in CONTROLLERS:
                if c in e.super_options:
                    mounts.setdefault(c, e.mount_point)
    return mounts


@pytest.fixture
def real_backend() -> Iterator[CgroupV1]:
    with open("/proc/self/mountinfo") as f:
        backend = CgroupV1.from_mounts(parse_mountinfo(f.read()))
    assert backend is not None
    yield backend
    backend.close()


@pytest.fixture
def new_group(real_backend: CgroupV1) -> Iterator[GroupFactory]:
    groups: list[GroupV1] = []

    def make() -> GroupV1:
        group = real_backend.create(f"unit-{uuid.uuid4().hex[:12]}")
        groups.append(group)
        return group

    yield make
    for group in groups:
        group.kill()
        group.remove()
        assert not any(os.path.exists(d) for d in group.dirs().values())


def _fork_into(group: GroupV1, body: Callable[[], int], ready: int | None = None) -> int:
    """Fork a child that joins ``group`` (writes 0 to each procs file), then runs ``body``."""
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


@needs_cgroup_v1
def test_real_backend_detects_all_controllers(real_backend: CgroupV1) -> None:
    mounts = _real_mounts()
    assert real_backend.controllers == frozenset(CONTROLLERS)
    assert real_backend.hierarchies() == sorted(set(mounts.values()))


@needs_cgroup_v1
def test_real_limits_land_in_kernel_files(real_backend: CgroupV1, new_group: GroupFactory) -> None:
    group = new_group()
    token = owner_token()
    mounts = _real_mounts()
    leaf = group.name.split("/")[1]
    assert group.name == f"{token}/{leaf}"
    assert group.dirs() == {c: os.path.join(mounts[c], PREFIX, token, leaf) for c in CONTROLLERS}
    group.set_limits(Limits(cpu=0.3, mem=64 * MiB, pids=50))
    d = group.dirs()
    assert _read(f"{d['cpu']}/cpu.cfs_period_us") == "100000\n"
    assert _read(f"{d['cpu']}/cpu.cfs_quota_us") == "30000\n"
    assert _read(f"{d['memory']}/memory.limit_in_bytes") == "67108864\n"
    if os.path.exists(f"{d['memory']}/memory.memsw.limit_in_bytes"):
        assert _read(f"{d['memory']}/memory.memsw.limit_in_bytes") == "67108864\n"
    else:
        assert _read(f"{d['memory']}/memory.swappiness") == "0\n"
    assert _read(f"{d['pids']}/pids.max") == "50\n"
    assert group.pids() == set()
    assert group.read_usage() == Usage(peak_mem=0, peak_pids=0 if os.path.exists(
        f"{d['pids']}/pids.peak") else None)  # fmt: skip


@needs_cgroup_v1
def test_real_cpu_cap_throttles(new_group: GroupFactory) -> None:
    group = new_group()
    group.set_limits(Limits(cpu=0.2))
    burn = 0.5

    def body() -> int:
        end = time.monotonic() + burn
        while time.monotonic() < end:
            pass
        return 0

    status = reap(_fork_into(group, body))
    assert os.waitstatus_to_exitcode(status) == 0
    usage = group.read_usage()
    cpu = usage.cpu_user + usage.cpu_system
    assert usage.nr_throttled > 0
    assert 0.15 < usage.throttled < burn
    # ~20 ms of CPU per 100 ms period, over `burn` seconds of wall time.
    assert 0.2 * burn * 0.4 < cpu < 0.2 * burn * 1.6, usage
    assert usage.peak_pids in (None, 1)
    assert (usage.oom_kills, usage.pids_limit_hits) == (0, 0)


def _sleep_30() -> int:  # pragma: no cover - runs in the child
    time.sleep(30)
    return 0


@needs_cgroup_v1
def test_real_kill_and_remove(new_group: GroupFactory) -> None:
    group = new_group()
    r, w = os.pipe()
    try:
        pid = _fork_into(group, _sleep_30, ready=w)
        os.close(w)
        w = -1
        assert select.select([r], [], [], 10)[0] == [r]
        assert os.read(r, 1) == b"j"
        assert group.pids() == {pid}
        for path in group.procs_files():
            assert _read(path).split() == [str(pid)]
        group.kill()
        assert group.pids() == set()
        status = reap(pid)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        group.remove()
        assert not any(os.path.exists(d) for d in group.dirs().values())
    finally:
        os.close(r)
        if w != -1:
            os.close(w)


@needs_cgroup_v1
def test_real_oom_kill_is_counted(new_group: GroupFactory) -> None:
    group = new_group()
    limit = 32 * MiB
    group.set_limits(Limits(mem=limit))

    def body() -> int:
        size = 256 * MiB
        block = bytearray(size)
        block[::4096] = b"\x01" * len(range(0, size, 4096))
        return 0

    status = reap(_fork_into(group, body))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    usage = group.read_usage()
    assert usage.oom_kills == 1
    assert usage.peak_mem is not None and limit // 2 < usage.peak_mem <= limit


@needs_cgroup_v1
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
                time.sleep(0.2)
                os._exit(0)
            children.append(child)
        for child in children:
            os.waitpid(child, 0)
        return refused

    status = reap(_fork_into(group, body))
    assert os.waitstatus_to_exitcode(status) == 3  # 1 + 2 children fit under pids=3
    usage = group.read_usage()
    assert usage.pids_limit_hits == 3
    assert usage.peak_pids in (None, 3)


@needs_cgroup_v1
def test_real_sweep(real_backend: CgroupV1) -> None:
    dead_owner = f"{_unused_pid()}.12345"
    sleeper = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
    live = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
    live_owner = owner_token(live.pid)
    reused_owner = f"{live.pid}.1"  # that pid, but another start time: stale
    made: list[str] = []
    reaper = threading.Thread(target=sleeper.wait, daemon=True)
    try:
        for h in real_backend.hierarchies():
            for owner in (dead_owner, live_owner, reused_owner):
                path = os.path.join(h, PREFIX, owner, "1")
                os.makedirs(path)
                made.append(path)
            with open(os.path.join(h, PREFIX, dead_owner, "1", "cgroup.procs"), "w") as f:
                f.write(str(sleeper.pid))
        for h in real_backend.hierarchies():
            assert _read(os.path.join(h, PREFIX, dead_owner, "1", "cgroup.procs")).split() == [
                str(sleeper.pid)
            ]
        reaper.start()
        swept = real_backend.sweep()
        reaper.join(10)
        assert sleeper.returncode == -signal.SIGKILL
        mine = {dead_owner, reused_owner, live_owner}
        assert sorted(p for p in swept if p.split("/")[-2] in mine) == sorted(
            os.path.join(h, PREFIX, owner, "1")
            for h in real_backend.hierarchies()
            for owner in (dead_owner, reused_owner)
        )
        for h in real_backend.hierarchies():
            assert not os.path.exists(os.path.join(h, PREFIX, dead_owner))
            assert not os.path.exists(os.path.join(h, PREFIX, reused_owner))
            assert os.path.isdir(os.path.join(h, PREFIX, live_owner, "1"))
        assert live.poll() is None
    finally:
        for proc in (sleeper, live):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if reaper.is_alive():
            reaper.join(10)
        for path in made:
            for d in (path, os.path.dirname(path)):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
        for h in real_backend.hierarchies():
            try:
                os.rmdir(os.path.join(h, PREFIX))
            except OSError:
                pass  # other runs' groups are still there


def test_makedirs_makes_the_parents_once_and_accepts_an_existing_directory(
    tmp_path: Path,
) -> None:
    from pytest_isolate.cgroups._files import _makedirs

    _makedirs(str(tmp_path / "owner" / "1"))  # the parents first
    _makedirs(str(tmp_path / "owner" / "2"))  # then one directory
    _makedirs(str(tmp_path / "owner" / "2"))  # already there
    assert sorted(os.listdir(tmp_path / "owner")) == ["1", "2"]
    (tmp_path / "owner" / "file").write_text("")
    with pytest.raises(FileExistsError):
        _makedirs(str(tmp_path / "owner" / "file"))
