"""Which cgroups the sandboxes get: the host's (as root), a subtree named with
``--isolate-cgroup-root``, or (rootless) one delegated to this user; and the probe's
cgroup check, with the fix for each way it can fail."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from ..cgroups import CgroupBackend, CgroupError
from ..cgroups.detect import detect
from ..cgroups.v1 import CONTROLLERS, CgroupV1
from ..cgroups.v2 import CgroupV2, mount_point
from ..cgroups.v2_delegation import is_leaf_name, own_cgroup
from ..mountinfo import parse_mountinfo
from .checks import CGROUPS, Check
from .userns import is_real_root, read_text

SYSTEMD_RUN = "systemd-run --user --scope -p Delegate=yes"
"""The prefix that starts a command in a cgroup v2 scope delegated to the user."""


def cgroup_backend(cgroup_root: str = "", proc: str = "/proc") -> CgroupBackend | None:
    """The cgroup backend to use: under ``cgroup_root`` if given, else the host's, else
    (rootless) the delegated cgroup this process sits in, found from /proc/self/cgroup
    (``proc``: where procfs is, for tests)."""
    with open(f"{proc}/self/mountinfo") as f:
        entries = parse_mountinfo(f.read())
    mounts: dict[str, str] = {}
    for entry in entries:
        if entry.fstype == "cgroup":
            for controller in CONTROLLERS:
                if controller in entry.super_options:
                    mounts.setdefault(controller, entry.mount_point)
    unified = mount_point(entries)
    if cgroup_root:
        under = {c: m + cgroup_root for c, m in mounts.items() if os.path.isdir(m + cgroup_root)}
        if under:
            writable = {c: d for c, d in under.items() if os.access(d, os.W_OK)}
            return CgroupV1(writable) if writable else None
        if unified is not None and os.path.isdir(unified + cgroup_root):
            return _v2_under(unified, cgroup_root, proc)
        raise FileNotFoundError(f"no cgroup hierarchy has {cgroup_root}")
    backend = detect(entries)
    if backend is not None:
        return backend
    own: dict[str, str] = {}
    for line in (read_text(f"{proc}/self/cgroup") or "").splitlines():
        _, names, path = line.split(":", 2)
        for controller in names.split(","):
            if controller in mounts and _delegated(mounts[controller] + path):
                own[controller] = mounts[controller] + path.rstrip("/")
    if own:
        return CgroupV1(own)
    current = own_cgroup(proc)
    if unified is None or current is None:
        return None
    if is_leaf_name(os.path.basename(current)):
        # Our own leaf: a pytest that moved started us (the builder, an xdist worker).
        current = os.path.dirname(current)
    if current != "/" and _delegated_v2(unified + current):
        return _v2_under(unified, current, proc)
    return None


def _v2_under(mount: str, path: str, proc: str) -> CgroupBackend:
    """The v2 backend under the cgroup ``path``: as root, any; rootless, one delegated to
    us that this process sits in (or below), since only there may we move a process."""
    if not is_real_root():
        if not _delegated_v2(mount + path):
            raise PermissionError(
                errno.EACCES, f"{mount + path} is not delegated to this user (uid "
                f"{os.geteuid()}): it, its cgroup.procs and its cgroup.subtree_control must be "
                "owned by the user, as systemd's Delegate=yes does",
            )  # fmt: skip
        own = own_cgroup(proc)
        if own is None or not (own == path or own.startswith(path.rstrip("/") + "/")):
            raise CgroupError(
                errno.EACCES, f"pytest runs in the cgroup {own}, outside {path}: on cgroup v2 "
                "an ordinary user can move processes only within a cgroup delegated to it, so "
                "pytest must be started inside it",
            )  # fmt: skip
    return CgroupV2.delegated(mount, path)


def _delegated(path: str) -> bool:
    """A cgroup v1 directory delegated to us: chowned to our uid (never one we merely may
    write to: we do not touch a cgroup nobody gave us)."""
    uid = os.geteuid()
    if uid == 0 or str(uid) == (read_text("/proc/sys/kernel/overflowuid") or "65534"):
        return False  # root in a user namespace, or an unmapped uid: not a delegation
    try:
        return os.stat(path).st_uid == uid and os.access(path, os.W_OK)
    except OSError:
        return False


def _delegated_v2(path: str) -> bool:
    """A cgroup v2 directory delegated to us, as ``_delegated``, with the files that make a
    delegation (systemd's Delegate=yes chowns them): cgroup.procs, cgroup.subtree_control."""
    return _delegated(path) and all(
        os.access(os.path.join(path, name), os.W_OK)
        for name in ("cgroup.procs", "cgroup.subtree_control")
    )


def _pure_v2(proc: str = "/proc") -> bool:
    """cgroup2 is mounted and no cgroup v1 hierarchy holds a controller we use."""
    with open(f"{proc}/self/mountinfo") as f:
        entries = parse_mountinfo(f.read())
    v1 = any(e.fstype == "cgroup" and e.super_options & set(CONTROLLERS) for e in entries)
    return not v1 and any(e.fstype == "cgroup2" for e in entries)


def cgroup_detail(version: int, controllers: Iterable[str], missing: Iterable[str] = ()) -> str:
    """The cgroup check's detail: ``cgroup v2: memory, pids; controllers missing: cpu``."""
    text = f"cgroup v{version}: {', '.join(sorted(controllers))}"
    missing = sorted(missing)
    return text + (f"; controllers missing: {', '.join(missing)}" if missing else "")


def parse_cgroup_detail(text: str) -> tuple[int | None, tuple[str, ...], tuple[str, ...]]:
    """(version, controllers, missing controllers) of a ``cgroup_detail`` text; version
    None for any other text (no cgroups to use)."""
    head, _, rest = text.partition(": ")
    if not head.startswith("cgroup v") or not head[len("cgroup v") :].isdigit():
        return None, (), ()
    used, _, absent = rest.partition("; controllers missing: ")

    def names(part: str) -> tuple[str, ...]:
        return tuple(c.strip() for c in part.split(",") if c.strip())

    return int(head[len("cgroup v") :]), names(used), names(absent)


def _rootless_cgroup_fix(v2: bool) -> str:
    if v2:
        return (
            f"start pytest as the only process of a cgroup delegated to you: {SYSTEMD_RUN} "
            "pytest ... (see the README's rootless setup)"
        )
    return (
        "delegate a cgroup to this user and name it with --isolate-cgroup-root: as root, "
        "create one in each v1 hierarchy and chown it (see the README's rootless setup)"
    )


def _missing_fix(backend: CgroupBackend, root: bool) -> str:
    base = backend.hierarchies()[0]
    if backend.version != 2:
        return "mount the missing cgroup v1 controllers"
    if not getattr(backend, "delegated_path", ""):
        return (
            f"enable them for the children of the cgroup2 root: "
            f"echo '+cpu +memory +pids' > {base}/cgroup.subtree_control"
        )
    parent = os.path.dirname(base)
    missing = " ".join(f"+{c}" for c in sorted({"cpu", "memory", "pids"} - backend.controllers))
    return (
        f"the parent cgroup must pass them on to {base}: with systemd, delegate them to user "
        "sessions (Delegate=cpu memory pids in a drop-in for user@.service; see the README's "
        f"rootless setup), else as root: echo '{missing}' > {parent}/cgroup.subtree_control"
    )


def cgroup_check(root: bool, cgroup_root: str = "", proc: str = "/proc") -> Check:
    v2 = _pure_v2(proc)
    try:
        backend = cgroup_backend(cgroup_root, proc)
    except OSError as exc:
        fix = (
            "create that cgroup and chown it to this user"
            if isinstance(exc, FileNotFoundError) or root
            else _rootless_cgroup_fix(v2)
        )
        return Check(CGROUPS, False, str(exc), fix)
    if backend is None or not backend.controllers:
        fix = (
            "run as root on a host with cgroup v1 (cpu, cpuacct, memory, pids) or v2"
            if root
            else _rootless_cgroup_fix(v2)
        )
        return Check(CGROUPS, False,
                     "no writable cgroup hierarchy (v1 cpu/cpuacct/memory/pids or v2)",
                     fix)  # fmt: skip
    wanted = {"cpu", "memory", "pids"} | ({"cpuacct"} if backend.version == 1 else set())
    missing = wanted - backend.controllers
    try:
        group = backend.create(f"probe-{os.getpid()}")
        group.remove()
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    except OSError as exc:
        fix = "run pytest as root" if root or not v2 else _rootless_cgroup_fix(v2)
        return Check(CGROUPS, False, str(exc), fix)
    detail = cgroup_detail(backend.version, backend.controllers, missing)
    if missing:
        return Check(CGROUPS, False, detail, _missing_fix(backend, root))
    return Check(CGROUPS, True, detail)
