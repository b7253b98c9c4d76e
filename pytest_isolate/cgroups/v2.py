"""cgroup v2 backend: one directory per sandbox in the unified hierarchy.

Layout: ``<base>/pytest-isolate/<PID>.<STARTTIME>/<N>``, as on v1. ``<base>`` is the
mount's root as root, or a group delegated to us (rootless: a ``systemd-run --user
--scope -p Delegate=yes`` scope, or one named with ``--isolate-cgroup-root``). The two
upper levels are ours: they hold no process (v2's "no internal processes" rule), and their
``cgroup.subtree_control`` passes cpu, memory and pids down to the sandboxes.

We never write ``cgroup.subtree_control`` of a cgroup that nobody gave us: the mount's root
must already enable the controllers for its children (systemd does; see
``host.cgroup_choice``). A delegated base is ours to use (``v2_delegation``).

Kernel facts used here:
- ``cpu.stat`` has ``usage_usec``/``user_usec``/``system_usec`` even without the cpu
  controller; ``nr_throttled``/``throttled_usec`` only with it.
- ``memory.peak`` needs Linux >= 5.19, ``pids.peak`` >= 6.1, ``cgroup.kill`` >= 5.14;
  without ``cgroup.kill`` every process listed in ``cgroup.procs`` is killed in a loop.
- ``memory.oom.group = 1`` makes an OOM kill the whole sandbox, not one process of it;
  ``memory.events`` ``oom_group_kill`` counts the group kills, ``oom_kill`` the processes
  killed, the victim twice (see ``_processes_killed``).
- ``memory.swap.max`` exists only with swap accounting.
- A group with live processes (or live child groups) cannot be removed: rmdir says EBUSY.
- Writing ``+c`` to ``cgroup.subtree_control`` is EBUSY while the group holds a process;
  a process can join a group only while its ``cgroup.subtree_control`` is empty (EBUSY);
  ``-c`` is EBUSY while a child group enables ``c`` for its own children.
- Moving a process is allowed to whoever may write ``cgroup.procs`` of the common ancestor
  of its old and new group, checked with the credentials of the file's opener (Linux
  >= 5.16): within a delegated base, the user who owns it.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Mapping

from ..mountinfo import MountEntry
from . import PREFIX, CgroupError, Limits, Usage
from ._files import _keyed, _makedirs, _read, _rmdir_each, _rmdir_quietly, _tree, _write
from .owners import kill_each, owner_token, remove_owner_dir, stale_owner_dirs, token_is_stale
from .v2_delegation import LEAF_PREFIX, enable_base, is_leaf_name

CONTROLLERS = ("cpu", "memory", "pids")
UNIFIED = "cgroup2"
"""The key of ``GroupV2.dirs()`` that names the group's directory whatever is enabled."""


class GroupV2:
    def __init__(self, name: str, path: str, controllers: Iterable[str] = CONTROLLERS) -> None:
        self.name = name
        self.path = path
        self.controllers = frozenset(controllers)

    @classmethod
    def from_dirs(cls, name: str, dirs: Mapping[str, str]) -> GroupV2:
        """Rebuild a group from its ``dirs()`` (sent from the sandbox builder)."""
        return cls(name, dirs[UNIFIED], (c for c in dirs if c != UNIFIED))

    def dirs(self) -> dict[str, str]:
        out = {UNIFIED: self.path}
        out.update((c, self.path) for c in sorted(self.controllers))
        return out

    def procs_files(self) -> list[str]:
        # v2 has no per-thread ``tasks`` file: "0" to cgroup.procs moves the whole
        # (single-threaded, freshly forked) test process.
        return [os.path.join(self.path, "cgroup.procs")]

    def needed_joins(self, limits: Limits) -> list[bool]:
        return [True]  # one directory holds every controller

    def set_limits(self, limits: Limits) -> None:
        d = self.path
        if "cpu" in self.controllers and limits.cpu is not None:
            quota, period = limits.cpu_quota_us()
            _write(f"{d}/cpu.max", f"{quota} {period}")
        if "memory" in self.controllers and limits.mem is not None:
            _write(f"{d}/memory.max", str(limits.mem))
            if os.path.exists(f"{d}/memory.swap.max"):
                _write(f"{d}/memory.swap.max", "0")
            _write(f"{d}/memory.oom.group", "1")
        if "pids" in self.controllers and limits.pids is not None:
            _write(f"{d}/pids.max", str(limits.pids))

    def read_usage(self) -> Usage:
        d = self.path
        fields: dict[str, float | int | None] = {}
        try:
            stat = _keyed(_read(f"{d}/cpu.stat"))
        except FileNotFoundError:
            stat = {}
        total = stat.get("usage_usec", 0) / 1e6
        user = stat.get("user_usec", 0) / 1e6
        system = stat.get("system_usec", 0) / 1e6
        if stat:
            # Scale the (tick-based) split to the exact total, as on v1.
            if user + system > 0:
                fields["cpu_user"] = total * user / (user + system)
                fields["cpu_system"] = total * system / (user + system)
            else:
                fields["cpu_user"] = total
        if "cpu" in self.controllers:
            fields["nr_throttled"] = stat.get("nr_throttled", 0)
            fields["throttled"] = stat.get("throttled_usec", 0) / 1e6
        if "memory" in self.controllers:
            try:
                fields["peak_mem"] = int(_read(f"{d}/memory.peak"))
            except FileNotFoundError:  # memory.peak: Linux >= 5.19
                pass
            events = _keyed(_read(f"{d}/memory.events"))
            fields["oom_kills"] = _processes_killed(events)
        if "pids" in self.controllers:
            try:
                fields["peak_pids"] = int(_read(f"{d}/pids.peak"))
            except FileNotFoundError:  # pids.peak: Linux >= 6.1
                pass
            fields["pids_limit_hits"] = _keyed(_read(f"{d}/pids.events")).get("max", 0)
        return Usage(**fields)  # type: ignore[arg-type]

    def _tree(self) -> list[str]:
        """This group's directory and every group below it, deepest first."""
        return _tree(self.path)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self._tree():
            try:
                found.update(int(p) for p in _read(f"{d}/cgroup.procs").split())
            except FileNotFoundError:
                pass
        return found

    def _populated(self) -> bool:
        try:
            events = _keyed(_read(f"{self.path}/cgroup.events"))
        except FileNotFoundError:
            return bool(self.pids())
        return events.get("populated", 0) != 0

    def kill(self, deadline: float = 5.0) -> None:
        """SIGKILL every process in the group (and in groups below it) until it is empty:
        with ``cgroup.kill`` when the kernel has it, else pid by pid."""
        end = time.monotonic() + deadline
        kill_file = f"{self.path}/cgroup.kill"
        has_kill = os.path.exists(kill_file)
        while True:
            if has_kill:
                if not self._populated():
                    return
                # Stopped processes die too: the kernel wakes them for SIGKILL.
                try:
                    _write(kill_file, "1")
                except CgroupError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
                    return  # removed meanwhile: nothing left
            else:
                pids = self.pids()
                if not pids:
                    return
                kill_each(pids)
            if time.monotonic() > end:
                raise CgroupError(
                    errno.EBUSY, f"processes {sorted(self.pids())} survive in {self.name}"
                )
            time.sleep(0.001)

    def remove(self, deadline: float = 5.0) -> None:
        end = time.monotonic() + deadline
        try:
            os.rmdir(self.path)  # the usual case: an emptied leaf, no listing needed
            return
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
        _rmdir_each(self._tree(), end)


def _processes_killed(events: Mapping[str, int]) -> int:
    """Processes the OOM killer killed, from ``memory.events``.

    With ``memory.oom.group = 1`` the kernel kills the chosen victim, then every process
    of the group, the victim again among them while it is still exiting: ``oom_kill``
    counts it twice for each ``oom_group_kill`` (measured on 6.1: a single hog shows
    ``oom_kill 2``, ``oom_group_kill 1``).
    """
    kills = events.get("oom_kill", 0)
    groups = events.get("oom_group_kill", 0)
    return max(kills - groups, groups)


def _enabled(path: str) -> frozenset[str]:
    """The controllers ``path`` enables for its children (its ``cgroup.subtree_control``)."""
    try:
        return frozenset(_read(os.path.join(path, "cgroup.subtree_control")).split())
    except OSError:
        return frozenset()


def available(path: str) -> frozenset[str]:
    """The controllers the parent of ``path`` passes on to it (its ``cgroup.controllers``)."""
    try:
        return frozenset(_read(os.path.join(path, "cgroup.controllers")).split())
    except OSError:
        return frozenset()


def mount_point(entries: Iterable[MountEntry]) -> str | None:
    """Where cgroup2 is mounted (``/sys/fs/cgroup`` first if there are several)."""
    mounts = [e.mount_point for e in entries if e.fstype == "cgroup2"]
    mounts.sort(key=lambda m: m != "/sys/fs/cgroup")
    return mounts[0] if mounts else None


class CgroupV2:
    version = 2

    def __init__(
        self, mount: str, controllers: Iterable[str], proc: str = "/proc", base: str = ""
    ) -> None:
        """``mount``: where cgroup2 is mounted; ``controllers``: those of ``CONTROLLERS`` its
        root enables for its children. ``base``: a cgroup path delegated to us (as
        ``/proc/self/cgroup`` shows it) to create the groups under instead of the root; then
        ``controllers`` are those its parent passes on to it (``delegated`` finds them)."""
        self.mount = mount
        self.base = mount + base if base else mount
        self.delegated_path = base
        self.controllers = frozenset(controllers) & frozenset(CONTROLLERS)
        self._proc = proc
        self._token = owner_token(proc=proc)
        self._seq = 0
        self._session_ready = False

    @classmethod
    def from_mounts(cls, entries: Iterable[MountEntry]) -> CgroupV2 | None:
        """The writable cgroup2 mount (``/sys/fs/cgroup`` first if there are several)."""
        mounts = [e.mount_point for e in entries if e.fstype == "cgroup2"]
        mounts.sort(key=lambda m: m != "/sys/fs/cgroup")
        for mount in mounts:
            if os.path.isdir(mount) and os.access(mount, os.W_OK):
                return cls(mount, _enabled(mount))
        return None

    @classmethod
    def delegated(cls, mount: str, base: str, proc: str = "/proc") -> CgroupV2:
        """Groups under the delegated cgroup ``base`` (a path below ``mount``), with every
        controller of ours that its parent passes on to it."""
        return cls(mount, available(mount + base), proc, base)

    def hierarchies(self) -> list[str]:
        return [self.base]

    def session_dirs(self) -> list[str]:
        return [os.path.join(self.base, PREFIX, self._token)]

    def _enable(self, path: str) -> None:
        """Pass our controllers on to the children of ``path``, a group we created."""
        wanted = " ".join(f"+{c}" for c in sorted(self.controllers - _enabled(path)))
        if not wanted:
            return
        control = f"{path}/cgroup.subtree_control"
        try:
            _write(control, wanted)
        except CgroupError as exc:
            if exc.errno == errno.ENOENT and os.path.exists(control):
                raise CgroupError(
                    exc.errno, f"cannot write {wanted!r} to {control}: the parent group does "
                    "not enable these controllers for its children",
                ) from None  # fmt: skip
            raise

    def _enable_base(self) -> None:
        """A delegated base: enable our controllers for its children (``DelegatedBase``)."""
        wanted = self.controllers - _enabled(self.base)
        if not self.delegated_path or not wanted:
            return
        enable_base(self.base, wanted, self.delegated_path, self._proc)

    def _prepare_session(self) -> None:
        """Create (or find) our two upper levels and enable the controllers on them."""
        self._enable_base()
        top = os.path.join(self.base, PREFIX)
        session = os.path.join(top, self._token)
        for _ in range(3):
            path = top
            try:
                for path in (top, session):
                    try:
                        _makedirs(path)
                    except OSError as exc:
                        raise CgroupError(
                            exc.errno, f"cannot create {path}: {exc.strerror}"
                        ) from None
                    self._enable(path)
                self._session_ready = True
                return
            except CgroupError as exc:
                # A concurrent run may remove the shared top directory between our steps:
                # then start again. Any other failure is real.
                if exc.errno != errno.ENOENT or os.path.isdir(path):
                    raise
        raise CgroupError(errno.ENOENT, f"cannot create {session}: {top} keeps disappearing")

    def create(self, name: str | None = None) -> GroupV2:
        if name is None:
            self._seq += 1
            name = str(self._seq)
        path = os.path.join(self.session_dirs()[0], name)
        for attempt in range(3):
            if not self._session_ready or attempt:
                self._prepare_session()
            try:
                os.mkdir(path)
                break
            except FileExistsError:
                break
            except FileNotFoundError:
                continue  # a concurrent run removed the shared top directory: redo it
            except OSError as exc:
                raise CgroupError(exc.errno, f"cannot create {path}: {exc.strerror}") from None
        else:
            raise CgroupError(errno.ENOENT, f"cannot create {path}: its parent keeps disappearing")
        return GroupV2(f"{self._token}/{name}", path, self.controllers)

    def close(self) -> None:
        """Remove this session's directories, with any group still in them.

        Normally every group has been removed by then; one being built when the builder
        was told to stop (SIGTERM can come at any point) is removed here, not left behind.
        """
        session = self.session_dirs()[0]
        _remove_owner_dir(session)
        _rmdir_quietly(os.path.dirname(session))  # the prefix directory, if no other run uses it
        self._session_ready = False

    def sweep(self) -> list[str]:
        """Remove the groups of runs that are gone (their owner process is dead), and in a
        delegated base the leaves they left (if empty: a process they started may live on)."""
        swept = []
        top = os.path.join(self.base, PREFIX)
        for owner_dir in stale_owner_dirs(top, self._token, self._proc):
            swept += _remove_owner_dir(owner_dir)
        if self.delegated_path:
            try:
                names = os.listdir(self.base)
            except OSError:
                names = []
            for name in names:
                stale = is_leaf_name(name) and token_is_stale(
                    name[len(LEAF_PREFIX) :] + ".0", self._proc
                )
                if stale and _rmdir_quietly(os.path.join(self.base, name)):
                    swept.append(os.path.join(self.base, name))
        return swept


def _remove_owner_dir(owner_dir: str) -> list[str]:
    return remove_owner_dir(owner_dir, lambda name, path: GroupV2(name, path, ()))
