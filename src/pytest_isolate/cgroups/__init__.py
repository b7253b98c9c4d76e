"""cgroup caps and accounting: the data types, detection, and the backend interface.

One backend per cgroup version (``v1.py``, ``v2.py``); ``detect`` picks the one
the host's controllers are mounted for. A backend creates one group per sandbox
under a directory named ``PREFIX`` at the top of each hierarchy, so that a later
run can find and sweep what a killed run left.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "PREFIX",
    "CgroupError",
    "Group",
    "Limits",
    "Usage",
    "CgroupBackend",
    "MountEntry",
    "parse_mountinfo",
    "owner_token",
    "token_is_stale",
    "stale_owner_dirs",
    "detect",
    "attach",
    "leave_delegated",
]

PREFIX: Final = "pytest-isolate"


class CgroupError(OSError):
    """A cgroup operation failed; the message names the file."""


@dataclass(frozen=True)
class Limits:
    cpu: float | None = None
    mem: int | None = None
    pids: int | None = None


@dataclass(frozen=True)
class Usage:
    """What one sandbox consumed, read from the cgroup counters.

    ``None`` means the host cannot measure that figure.
    """

    cpu_user: float = 0.0
    """Seconds of user-mode CPU."""
    cpu_system: float = 0.0
    """Seconds of kernel-mode CPU."""
    peak_mem: int | None = None
    """Peak memory charged to the sandbox, bytes."""
    oom_kills: int = 0
    nr_throttled: int = 0
    """Scheduler periods in which the CPU cap throttled the sandbox."""
    throttled: float = 0.0
    """Seconds the sandbox spent throttled."""
    peak_pids: int | None = None
    pids_limit_hits: int = 0
    """Forks refused because of the pids cap."""


class Group(Protocol):
    """One sandbox's cgroup(s) (one directory per v1 hierarchy; one directory on v2)."""

    name: str

    def dirs(self) -> dict[str, str]:
        """Controller -> this group's directory in that controller's hierarchy (v2: also
        the key ``cgroup2``, present even when no controller is enabled)."""

    def pids(self) -> set[int]:
        """Processes in the group."""

    def procs_files(self) -> list[str]:
        """The files a single-threaded process writes ``0`` to, to join the group."""

    def needed_joins(self, limits: Limits) -> list[bool]:
        """For each of ``procs_files()``: whether a test with these caps must join it.

        Accounting needs every hierarchy but one holding only a cap nobody asked for.
        """

    def set_limits(self, limits: Limits) -> None: ...

    def read_usage(self) -> Usage: ...

    def kill(self) -> None:
        """SIGKILL every process left in the group, until it is empty."""

    def remove(self, deadline: float = 5.0) -> None:
        """Remove the group's directories (it must be empty; EBUSY is retried until
        ``deadline`` seconds have passed)."""


class CgroupBackend(Protocol):
    version: int
    controllers: frozenset[str]

    def create(self, name: str) -> Group: ...

    def hierarchies(self) -> list[str]:
        """The mount points the groups are created under."""

    def sweep(self) -> list[str]:
        """Kill and remove groups left by runs whose process is gone; return their paths."""


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    root: str
    mount_point: str
    mount_options: frozenset[str]
    fstype: str
    source: str
    super_options: frozenset[str]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse ``/proc/PID/mountinfo`` (see proc(5))."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        left, _, right = line.partition(" - ")
        lfields = left.split()
        rfields = right.split()
        if len(lfields) < 6 or len(rfields) < 2:
            continue
        entries.append(
            MountEntry(
                mount_id=int(lfields[0]),
                parent_id=int(lfields[1]),
                root=_unescape(lfields[3]),
                mount_point=_unescape(lfields[4]),
                mount_options=frozenset(lfields[5].split(",")),
                fstype=rfields[0],
                source=_unescape(rfields[1]),
                super_options=frozenset(rfields[2].split(",")) if len(rfields) > 2 else frozenset(),
            )
        )
    return entries


def _start_time(pid: int, proc: str = "/proc") -> str | None:
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may hold spaces and parens.
    fields = stat.rsplit(b")", 1)[1].split()
    if fields[0] in (b"Z", b"X"):
        return None  # a zombie no longer owns anything (its parent may reap it late)
    return fields[19].decode()


def owner_token(pid: int | None = None, proc: str = "/proc") -> str:
    """``PID.STARTTIME`` of a live process: unique across pid reuse."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{_start_time(pid, proc)}"


def token_is_stale(name: str, proc: str = "/proc") -> bool:
    """Whether the group ``PID.STARTTIME.N`` belongs to a process that is gone."""
    parts = name.split(".")
    if len(parts) < 3 or not parts[0].isdigit():
        return False  # not one of ours: never touch it
    return _start_time(int(parts[0]), proc) != parts[1]


def stale_owner_dirs(top: str, token: str, proc: str = "/proc") -> list[str]:
    """The ``<top>/<PID>.<STARTTIME>`` directories of runs whose process is gone.

    ``token`` (the current run) and names that are not owner tokens are never returned.
    """
    try:
        owners = os.listdir(top)
    except FileNotFoundError:
        return []
    found = []
    for owner in owners:
        if owner == token or not token_is_stale(owner + ".0", proc):
            continue
        path = os.path.join(top, owner)
        if os.path.isdir(path):
            found.append(path)
    return found


def kill_each(pids: set[int]) -> None:
    """SIGKILL each of ``pids``, then SIGCONT (a stopped process dies only once woken)."""
    for pid in pids:
        for sig in (signal.SIGKILL, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def remove_owner_dir(owner_dir: str, group_at: Callable[[str, str], Group]) -> list[str]:
    """Kill and remove every group in one owner's directory, then the directory itself.

    ``group_at(name, path)`` makes the backend's group for a directory. Returns the groups
    removed; what cannot be removed (still busy) is left for a later sweep.
    """
    removed: list[str] = []
    try:
        children = os.listdir(owner_dir)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for child in children:
        path = os.path.join(owner_dir, child)
        if not os.path.isdir(path):
            continue
        group = group_at(f"{os.path.basename(owner_dir)}/{child}", path)
        try:
            group.kill()
            group.remove()
            removed.append(path)
        except OSError:
            pass
    try:
        os.rmdir(owner_dir)
    except OSError:
        pass
    return removed


def detect(entries: list[MountEntry] | None = None) -> CgroupBackend | None:
    """The backend for this host (``entries``: its parsed mountinfo, read if not given),
    or None when no usable hierarchy is mounted.

    cgroup v2 is chosen on a pure v2 host (no v1 hierarchy holds a controller we use), or
    when cpu, memory and pids are all enabled on the cgroup2 mount; v1 otherwise.
    """
    from .v1 import CgroupV1
    from .v2 import CONTROLLERS as V2_CONTROLLERS
    from .v2 import CgroupV2

    if entries is None:
        with open("/proc/self/mountinfo") as f:
            entries = parse_mountinfo(f.read())
    v2 = CgroupV2.from_mounts(entries)
    v1 = CgroupV1.from_mounts(entries)
    if v2 is not None and (v1 is None or v2.controllers >= frozenset(V2_CONTROLLERS)):
        return v2
    return v1


def attach(name: str, dirs: Mapping[str, str]) -> Group:
    """The group a backend created (``Group.name`` and ``Group.dirs()``), in another
    process: the builder sends both to pytest, which reads usage, kills and removes."""
    from .v1 import GroupV1
    from .v2 import UNIFIED, GroupV2

    if UNIFIED in dirs:
        return GroupV2.from_dirs(name, dirs)
    return GroupV1(name, dirs)


def leave_delegated() -> None:
    """Undo what this process changed in delegated cgroup v2 bases (a no-op if nothing):
    pytest calls it at the end, once its sandboxes are gone."""
    from .v2 import leave_delegated as leave

    leave()
