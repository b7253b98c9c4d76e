"""What this host allows: each capability is tried (in a throwaway child), not guessed.

``session_checks()`` tries each part of a sandbox once (a few forks, ~10 ms), as root
or rootless; ``isolation.decide_isolation`` turns the result into what the session's
sandboxes get. ``probe()`` returns frozen ``Capabilities`` for
``python -m pytest_isolate doctor``: one ``Check`` per part, each with whether it
works, what failed, and the command that would fix it.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import _ffi
from .cgroups import PREFIX, CgroupBackend

APPARMOR_SYSCTL = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
MAX_USERNS_SYSCTL = "/proc/sys/user/max_user_namespaces"

# The parts of a sandbox, as the probe, the header and the warning name them.
USERNS = "user namespace"
NAMESPACES = "pid/net/mnt/uts/ipc namespaces"
OVERLAY = "overlay snapshot"
PROC = "fresh /proc"
CGROUPS = "cgroup caps"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


@dataclass(frozen=True)
class Capabilities:
    checks: tuple[Check, ...]

    def get(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def _in_child(step: Callable[[], None]) -> str:
    """Run ``step`` in a forked child; return "" on success, else the error it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        code = 0
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(w, f"{exc}".encode()[:4000] or b"failed")
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return ""
    return message or f"the probe died (wait status {status})"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _userns_fix() -> str:
    if _read(APPARMOR_SYSCTL) == "1":
        return (
            "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0  "
            "(Ubuntu's AppArmor restriction), or run pytest as root"
        )
    if _read(MAX_USERNS_SYSCTL) == "0":
        return "sudo sysctl -w user.max_user_namespaces=15000"
    return (
        "run pytest as root, or allow user namespaces "
        "(in Docker: --security-opt seccomp=unconfined)"
    )


def is_real_root() -> bool:
    """euid 0 in the initial user namespace (root in a user namespace is rootless here)."""
    if os.geteuid() != 0:
        return False
    uid_map = _read("/proc/self/uid_map") or ""
    return uid_map.split() == ["0", "0", "4294967295"]


def enter_own_userns() -> None:
    """Rootless: a new user namespace mapping our own uid and gid (setgroups denied first)."""
    uid, gid = os.geteuid(), os.getegid()
    _ffi.unshare(_ffi.CLONE_NEWUSER)
    for name, value in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                        ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
        with open(f"/proc/self/{name}", "w") as f:
            f.write(value)


def _user_namespace(root: bool, scratch: str) -> None:
    if root:
        _ffi.unshare(_ffi.CLONE_NEWUSER)
        return
    # Ubuntu's AppArmor restriction lets the unshare succeed and strips the capabilities:
    # only a mount inside shows whether the namespace is usable.
    enter_own_userns()
    _ffi.unshare(_ffi.CLONE_NEWNS)
    _ffi.mount(None, "/", None, _ffi.MS_REC | _ffi.MS_PRIVATE)
    _ffi.mount("tmpfs", scratch, "tmpfs", 0, "mode=0700")


def _namespaces(root: bool) -> None:
    flags = _ffi.CLONE_NEWNS | _ffi.CLONE_NEWNET | _ffi.CLONE_NEWUTS | _ffi.CLONE_NEWIPC
    if not root:
        enter_own_userns()
    _ffi.unshare(flags | _ffi.CLONE_NEWPID)


def _overlay(root: bool, scratch: str) -> None:
    if not root:
        enter_own_userns()
    _ffi.unshare(_ffi.CLONE_NEWNS)
    _ffi.mount(None, "/", None, _ffi.MS_REC | _ffi.MS_PRIVATE)
    # These mounts live in this child's private mount namespace only.
    _ffi.mount("tmpfs", scratch, "tmpfs", 0, "mode=0700")
    for name in ("u", "w", "root"):
        os.mkdir(f"{scratch}/{name}")
    # Rootless, an overlay of / fails (its submounts are locked): one per top-level directory.
    lower, extra = ("/", "") if root else ("/etc", ",userxattr")
    _ffi.mount("overlay", f"{scratch}/root", "overlay", 0,
               f"lowerdir={lower},upperdir={scratch}/u,workdir={scratch}/w{extra}")  # fmt: skip


def _fresh_proc(root: bool, scratch: str) -> None:
    if not root:
        enter_own_userns()
    _ffi.unshare(_ffi.CLONE_NEWNS | _ffi.CLONE_NEWPID)
    _ffi.mount(None, "/", None, _ffi.MS_REC | _ffi.MS_PRIVATE)
    _ffi.mount("tmpfs", scratch, "tmpfs", 0, "mode=0700")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - pid 1 of the new pid namespace
        try:
            _ffi.mount("proc", scratch, "proc", _ffi.MS_NOSUID | _ffi.MS_NODEV | _ffi.MS_NOEXEC)
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise PermissionError("the kernel refuses a fresh proc mount")


SYSTEMD_RUN = "systemd-run --user --scope -p Delegate=yes"
"""The prefix that starts a command in a cgroup v2 scope delegated to the user."""


def cgroup_backend(cgroup_root: str = "", proc: str = "/proc") -> CgroupBackend | None:
    """The cgroup backend to use: under ``cgroup_root`` if given, else the host's, else
    (rootless) the delegated cgroup this process sits in, found from /proc/self/cgroup
    (``proc``: where procfs is, for tests)."""
    from .cgroups import detect, parse_mountinfo
    from .cgroups.v1 import CONTROLLERS, CgroupV1
    from .cgroups.v2 import is_leaf_name, mount_point, own_cgroup

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
    for line in (_read(f"{proc}/self/cgroup") or "").splitlines():
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
    from .cgroups import CgroupError
    from .cgroups.v2 import CgroupV2, own_cgroup

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
    if uid == 0 or str(uid) == (_read("/proc/sys/kernel/overflowuid") or "65534"):
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
    from .cgroups import parse_mountinfo
    from .cgroups.v1 import CONTROLLERS

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


def _cgroups(root: bool, cgroup_root: str = "", proc: str = "/proc") -> Check:
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


def session_checks(root: bool, cgroup_root: str = "") -> dict[str, Check]:
    """Each part of a sandbox tried once, in a throwaway child: name -> Check."""
    checks: dict[str, Check] = {}
    scratch = tempfile.mkdtemp(prefix=f"{PREFIX}-probe-")
    try:
        for name, step in (
            (USERNS, lambda: _user_namespace(root, scratch)),
            (NAMESPACES, lambda: _namespaces(root)),
            (OVERLAY, lambda: _overlay(root, scratch)),
            (PROC, lambda: _fresh_proc(root, scratch)),
        ):
            error = _in_child(step)
            fix = "" if not error else _userns_fix() if name in (USERNS, NAMESPACES) else ""
            checks[name] = Check(name, not error, error, fix)
    finally:
        os.rmdir(scratch)
    checks[CGROUPS] = _cgroups(root, cgroup_root)
    return checks


def sysctls() -> dict[str, str | None]:
    return {path: _read(path) for path in (APPARMOR_SYSCTL, MAX_USERNS_SYSCTL)}


def probe(cgroup_root: str = "") -> Capabilities:
    if sys.platform != "linux":
        fix = "run on Linux; elsewhere isolated tests run in-process"
        return Capabilities((Check("linux", False, f"platform is {sys.platform}", fix),))
    from .cgroups import leave_delegated

    root = is_real_root()
    checks = [Check("linux", True, os.uname().release + ("" if root else ", rootless"))]
    try:
        checks.extend(session_checks(root, cgroup_root).values())
    finally:
        leave_delegated()  # out of the leaf the cgroup check may have moved us into
    return Capabilities(tuple(checks))


def format_report(caps: Capabilities) -> str:
    lines = []
    for check in caps.checks:
        mark = "ok  " if check.ok else "FAIL"
        lines.append(f"[{mark}] {check.name}" + (f": {check.detail}" if check.detail else ""))
        if not check.ok and check.fix:
            lines.append(f"       fix: {check.fix}")
    lines.append("all isolation available" if caps.ok else "some isolation is not available")
    return "\n".join(lines)
