"""What this host allows: each capability is tried (in a throwaway child), not guessed.

``probe()`` returns frozen ``Capabilities``: one ``Check`` per capability, each with
whether it works, what failed, and the command that would fix it. Used by
``python -m pytest_isolate doctor``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from . import _ffi
from .cgroups import PREFIX

APPARMOR_SYSCTL = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
MAX_USERNS_SYSCTL = "/proc/sys/user/max_user_namespaces"


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


def _namespaces() -> None:
    flags = _ffi.CLONE_NEWNS | _ffi.CLONE_NEWNET | _ffi.CLONE_NEWUTS | _ffi.CLONE_NEWIPC
    if os.geteuid() != 0:
        _ffi.unshare(_ffi.CLONE_NEWUSER)
    _ffi.unshare(flags | _ffi.CLONE_NEWPID)


def _user_namespace() -> None:
    _ffi.unshare(_ffi.CLONE_NEWUSER)


def _overlay_and_proc(scratch: str) -> None:
    if os.geteuid() != 0:
        raise PermissionError("needs root (rootless overlays are not supported yet)")
    _ffi.unshare(_ffi.CLONE_NEWNS | _ffi.CLONE_NEWPID)
    _ffi.mount(None, "/", None, _ffi.MS_REC | _ffi.MS_PRIVATE)
    # These mounts live in this child's private mount namespace only.
    _ffi.mount("tmpfs", scratch, "tmpfs", 0, "mode=0700")
    for name in ("u", "w", "root"):
        os.mkdir(f"{scratch}/{name}")
    _ffi.mount("overlay", f"{scratch}/root", "overlay", 0,
               f"lowerdir=/,upperdir={scratch}/u,workdir={scratch}/w")  # fmt: skip
    pid = os.fork()
    if pid == 0:  # pragma: no cover - pid 1 of the new pid namespace
        try:
            _ffi.mount("proc", f"{scratch}/root/proc", "proc", 0)
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise PermissionError("a fresh /proc cannot be mounted (masked /proc, as in Docker?)")


def _cgroups() -> Check:
    from .cgroups import detect

    backend = detect()
    if backend is None:
        return Check(
            "cgroups", False, "no writable cgroup hierarchy (v1 cpu/cpuacct/memory/pids or v2)",
            "run pytest as root",
        )  # fmt: skip
    if backend.version == 2:
        mount = backend.hierarchies()[0]
        missing = {"cpu", "memory", "pids"} - backend.controllers
        fix = (
            f"enable them for the children of the cgroup2 root: "
            f"echo '+cpu +memory +pids' > {mount}/cgroup.subtree_control"
        )
    else:
        missing = {"cpu", "cpuacct", "memory", "pids"} - backend.controllers
        fix = "mount the missing cgroup v1 controllers"
    try:
        group = backend.create(f"probe-{os.getpid()}")
        group.remove()
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    except OSError as exc:
        return Check("cgroups", False, str(exc), "run pytest as root")
    if missing:
        return Check("cgroups", False, f"controllers missing: {', '.join(sorted(missing))}",
                     fix)  # fmt: skip
    version = getattr(backend, "version", "?")
    return Check("cgroups", True, f"cgroup v{version}: {', '.join(sorted(backend.controllers))}")


def probe() -> Capabilities:
    if sys.platform != "linux":
        fix = "run on Linux; elsewhere isolated tests run in-process"
        return Capabilities((Check("linux", False, f"platform is {sys.platform}", fix),))
    checks = [Check("linux", True, os.uname().release)]
    error = _in_child(_user_namespace)
    checks.append(Check("user namespace", not error, error, _userns_fix() if error else ""))
    error = _in_child(_namespaces)
    checks.append(
        Check("pid/net/mnt/uts/ipc namespaces", not error, error, _userns_fix() if error else "")
    )
    scratch = tempfile.mkdtemp(prefix=f"{PREFIX}-probe-")
    try:
        error = _in_child(lambda: _overlay_and_proc(scratch))
    finally:
        os.rmdir(scratch)
    checks.append(
        Check(
            "overlay snapshot and fresh /proc",
            not error,
            error,
            "run pytest as root (sudo)" if error else "",
        )
    )
    checks.append(_cgroups())
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
