"""Which backend this host's cgroups need, and a group made in another process."""

from __future__ import annotations

from collections.abc import Mapping

from ..mountinfo import MountEntry, parse_mountinfo
from . import CgroupBackend, Group
from .v1 import CgroupV1, GroupV1
from .v2 import CONTROLLERS as V2_CONTROLLERS
from .v2 import UNIFIED, CgroupV2, GroupV2


def detect(entries: list[MountEntry] | None = None) -> CgroupBackend | None:
    """The backend for this host (``entries``: its parsed mountinfo, read if not given),
    or None when no usable hierarchy is mounted.

    cgroup v2 is chosen on a pure v2 host (no v1 hierarchy holds a controller we use), or
    when cpu, memory and pids are all enabled on the cgroup2 mount; v1 otherwise.
    """
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
    if UNIFIED in dirs:
        return GroupV2.from_dirs(name, dirs)
    return GroupV1(name, dirs)
