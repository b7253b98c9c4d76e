"""cgroup v1 backend: one directory per sandbox in each of the cpu, cpuacct, memory and pids
hierarchies (some hosts co-mount ``cpu,cpuacct``; then they share a directory).

Layout: ``<hierarchy>/pytest-isolate/<PID>.<STARTTIME>/<N>``, the middle level naming the
pytest process that owns the groups so that a later run can sweep them if it was killed.

Kernel facts used here (measured on 6.18):
- ``memory.failcnt`` stays 0 on an OOM kill: read ``oom_kill`` from ``memory.oom_control``.
- ``memory.memsw.limit_in_bytes`` (swap accounting) must be >= ``memory.limit_in_bytes``,
  so it is written second; without swap accounting, ``memory.swappiness=0`` keeps the
  group's anonymous memory out of swap instead.
- ``cpuacct.usage`` is exact (ns); ``usage_user``/``usage_sys`` are tick-based.
- Joining through ``tasks`` avoids the global threadgroup rwsem (see ``procs_files``).
- A group can be removed only once its last task has been reaped; until then rmdir
  says EBUSY.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Mapping

from ..mountinfo import MountEntry
from . import PREFIX, CgroupError, Limits, Usage
from ._files import _keyed, _makedirs, _read, _rmdir_each, _tree, _write
from .owners import kill_each, owner_token, remove_owner_dir, stale_owner_dirs

CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")


class GroupV1:
    def __init__(self, name: str, dirs: Mapping[str, str]) -> None:
        self.name = name
        self._dirs = dict(dirs)  # controller -> directory
        self._unique = sorted(set(self._dirs.values()))
        self._cpu_capped = True  # until set_limits says: without a cap nothing is throttled

    def dirs(self) -> dict[str, str]:
        return dict(self._dirs)

    def procs_files(self) -> list[str]:
        # "0" written to ``tasks`` moves the writing thread only, which for the freshly
        # forked, single-threaded test process is the whole process; unlike a write to
        # ``cgroup.procs`` it does not take the global threadgroup lock, whose RCU grace
        # period made one join in ten take 5-20 ms (measured on 6.18).
        return [os.path.join(d, "tasks") for d in self._unique]

    def needed_joins(self, limits: Limits) -> list[bool]:
        # A hierarchy of the cpu controller alone only caps: without a cpu cap, not joining
        # it spares the test process its most expensive join (1-3 ms, up to 10+ ms, on
        # 6.18). cpuacct, in its own hierarchy or with cpu, still accounts the CPU time.
        only_cpu = [[c for c, x in self._dirs.items() if x == d] == ["cpu"] for d in self._unique]
        return [limits.cpu is not None or not alone for alone in only_cpu]

    def set_limits(self, limits: Limits) -> None:
        cpu = self._dirs.get("cpu")
        self._cpu_capped = limits.cpu is not None
        if cpu and limits.cpu is not None:
            quota, period = limits.cpu_quota_us()
            _write(f"{cpu}/cpu.cfs_period_us", str(period))
            _write(f"{cpu}/cpu.cfs_quota_us", str(quota))
        mem = self._dirs.get("memory")
        if mem and limits.mem is not None:
            _write(f"{mem}/memory.limit_in_bytes", str(limits.mem))
            if os.path.exists(f"{mem}/memory.memsw.limit_in_bytes"):
                _write(f"{mem}/memory.memsw.limit_in_bytes", str(limits.mem))
            else:
                _write(f"{mem}/memory.swappiness", "0")
        pids = self._dirs.get("pids")
        if pids and limits.pids is not None:
            _write(f"{pids}/pids.max", str(limits.pids))

    def read_usage(self) -> Usage:
        fields: dict[str, float | int | None] = {}
        acct = self._dirs.get("cpuacct")
        if acct:
            total = int(_read(f"{acct}/cpuacct.usage")) / 1e9
            user = int(_read(f"{acct}/cpuacct.usage_user")) / 1e9
            system = int(_read(f"{acct}/cpuacct.usage_sys")) / 1e9
            # The split is tick-based; scale it to the exact total.
            if user + system > 0:
                fields["cpu_user"] = total * user / (user + system)
                fields["cpu_system"] = total * system / (user + system)
            else:
                fields["cpu_user"] = total
        cpu = self._dirs.get("cpu")
        if cpu and self._cpu_capped:  # uncapped, the test does not even join this group
            stat = _keyed(_read(f"{cpu}/cpu.stat"))
            fields["nr_throttled"] = stat.get("nr_throttled", 0)
            fields["throttled"] = stat.get("throttled_time", 0) / 1e9
        mem = self._dirs.get("memory")
        if mem:
            fields["peak_mem"] = int(_read(f"{mem}/memory.max_usage_in_bytes"))
            fields["oom_kills"] = _keyed(_read(f"{mem}/memory.oom_control")).get("oom_kill", 0)
        pids = self._dirs.get("pids")
        if pids:
            try:
                fields["peak_pids"] = int(_read(f"{pids}/pids.peak"))
            except FileNotFoundError:  # pids.peak: Linux >= 6.1
                pass
            fields["pids_limit_hits"] = _keyed(_read(f"{pids}/pids.events")).get("max", 0)
        return Usage(**fields)  # type: ignore[arg-type]

    def pids(self) -> set[int]:
        """The processes in the group and in any group below it (a test that could mount
        its hierarchy may have made some)."""
        found: set[int] = set()
        for d in (sub for top in self._unique for sub in _tree(top)):
            try:
                found.update(int(p) for p in _read(f"{d}/cgroup.procs").split())
            except FileNotFoundError:
                pass
        return found

    def kill(self, deadline: float = 5.0) -> None:
        end = time.monotonic() + deadline
        while True:
            pids = self.pids()
            if not pids:
                return
            kill_each(pids)
            if time.monotonic() > end:
                raise CgroupError(errno.EBUSY, f"processes {sorted(pids)} survive in {self.name}")
            time.sleep(0.001)

    def remove(self, deadline: float = 5.0) -> None:
        """Remove the group's directories, and the groups below them first."""
        end = time.monotonic() + deadline
        for d in self._unique:
            try:
                os.rmdir(d)  # the usual case: an emptied leaf, no listing needed
                continue
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue
            _rmdir_each(_tree(d), end)


class CgroupV1:
    version = 1

    def __init__(self, mounts: Mapping[str, str], proc: str = "/proc") -> None:
        """``mounts``: controller -> the hierarchy's mount point."""
        self._mounts = dict(mounts)
        self._proc = proc
        self.controllers = frozenset(self._mounts)
        self._token = owner_token(proc=proc)
        self._seq = 0

    @classmethod
    def from_mounts(cls, entries: Iterable[MountEntry]) -> CgroupV1 | None:
        mounts: dict[str, str] = {}
        for entry in entries:
            if entry.fstype != "cgroup":
                continue
            for controller in CONTROLLERS:
                if controller in entry.super_options and controller not in mounts:
                    mounts[controller] = entry.mount_point
        writable = {c: m for c, m in mounts.items() if os.access(m, os.W_OK)}
        return cls(writable) if writable else None

    def hierarchies(self) -> list[str]:
        return sorted(set(self._mounts.values()))

    def session_dirs(self) -> list[str]:
        return [os.path.join(m, PREFIX, self._token) for m in self.hierarchies()]

    def create(self, name: str | None = None) -> GroupV1:
        if name is None:
            self._seq += 1
            name = str(self._seq)
        dirs = {}
        made: dict[str, str] = {}
        for controller, mount in self._mounts.items():
            if mount not in made:
                path = os.path.join(mount, PREFIX, self._token, name)
                try:
                    _makedirs(path)
                except OSError as exc:
                    GroupV1(name, made).remove()
                    raise CgroupError(exc.errno, f"cannot create {path}: {exc.strerror}") from None
                made[mount] = path
            dirs[controller] = made[mount]
        return GroupV1(f"{self._token}/{name}", dirs)

    def close(self) -> None:
        """Remove this session's directories, with any group still in them.

        Normally every group has been removed by then; one being built when the builder
        was told to stop (SIGTERM can come at any point) is removed here, not left behind.
        """
        for d in self.session_dirs():
            _remove_owner_dir(d)
            try:
                os.rmdir(os.path.dirname(d))  # the prefix directory, if no other run uses it
            except OSError:
                pass

    def sweep(self) -> list[str]:
        """Remove the groups of runs that are gone (their owner process is dead)."""
        swept = []
        for mount in self.hierarchies():
            for owner_dir in stale_owner_dirs(os.path.join(mount, PREFIX), self._token, self._proc):
                swept += _remove_owner_dir(owner_dir)
        return swept


def _remove_owner_dir(owner_dir: str) -> list[str]:
    return remove_owner_dir(owner_dir, lambda name, path: GroupV1(name, {"any": path}))
