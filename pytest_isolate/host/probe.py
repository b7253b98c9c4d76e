"""What this host allows: each capability is tried (in a throwaway child), not guessed.

``session_checks()`` tries each part of a sandbox once (a few forks, ~10 ms), as root
or rootless; ``isolation.decide_isolation`` turns the result into what the session's
sandboxes get. ``probe()`` returns frozen ``Capabilities`` for
``python -m pytest_isolate doctor``: one ``Check`` per part, each with whether it
works, what failed, and the command that would fix it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable

from .. import ffi
from ..cgroups import PREFIX
from ..cgroups.v2_delegation import leave_delegated
from .cgroup_choice import cgroup_check
from .checks import (
    APPARMOR_SYSCTL,
    CGROUPS,
    MAX_USERNS_SYSCTL,
    NAMESPACES,
    OVERLAY,
    PROC,
    USERNS,
    Capabilities,
    Check,
)
from .userns import enter_own_userns, is_real_root, read_text


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


def _userns_fix() -> str:
    if read_text(APPARMOR_SYSCTL) == "1":
        return (
            "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0  "
            "(Ubuntu's AppArmor restriction), or run pytest as root"
        )
    if read_text(MAX_USERNS_SYSCTL) == "0":
        return "sudo sysctl -w user.max_user_namespaces=15000"
    return (
        "run pytest as root, or allow user namespaces "
        "(in Docker: --security-opt seccomp=unconfined)"
    )


def _user_namespace(root: bool, scratch: str) -> None:
    if root:
        ffi.unshare(ffi.CLONE_NEWUSER)
        return
    # Ubuntu's AppArmor restriction lets the unshare succeed and strips the capabilities:
    # only a mount inside shows whether the namespace is usable.
    enter_own_userns()
    ffi.unshare(ffi.CLONE_NEWNS)
    ffi.mount(None, "/", None, ffi.MS_REC | ffi.MS_PRIVATE)
    ffi.mount("tmpfs", scratch, "tmpfs", 0, "mode=0700")


def _namespaces(root: bool) -> None:
    flags = ffi.CLONE_NEWNS | ffi.CLONE_NEWNET | ffi.CLONE_NEWUTS | ffi.CLONE_NEWIPC
    if not root:
        enter_own_userns()
    ffi.unshare(flags | ffi.CLONE_NEWPID)


def _overlay(root: bool, scratch: str) -> None:
    if not root:
        enter_own_userns()
    ffi.unshare(ffi.CLONE_NEWNS)
    ffi.mount(None, "/", None, ffi.MS_REC | ffi.MS_PRIVATE)
    # These mounts live in this child's private mount namespace only.
    ffi.mount("tmpfs", scratch, "tmpfs", 0, "mode=0700")
    for name in ("u", "w", "root"):
        os.mkdir(f"{scratch}/{name}")
    # Rootless, an overlay of / fails (its submounts are locked): one per top-level directory.
    lower, extra = ("/", "") if root else ("/etc", ",userxattr")
    ffi.mount("overlay", f"{scratch}/root", "overlay", 0,
               f"lowerdir={lower},upperdir={scratch}/u,workdir={scratch}/w{extra}")  # fmt: skip


def _fresh_proc(root: bool, scratch: str) -> None:
    if not root:
        enter_own_userns()
    ffi.unshare(ffi.CLONE_NEWNS | ffi.CLONE_NEWPID)
    ffi.mount(None, "/", None, ffi.MS_REC | ffi.MS_PRIVATE)
    ffi.mount("tmpfs", scratch, "tmpfs", 0, "mode=0700")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - pid 1 of the new pid namespace
        try:
            ffi.mount("proc", scratch, "proc", ffi.MS_NOSUID | ffi.MS_NODEV | ffi.MS_NOEXEC)
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise PermissionError("the kernel refuses a fresh proc mount")


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
    checks[CGROUPS] = cgroup_check(root, cgroup_root)
    return checks


def sysctls() -> dict[str, str | None]:
    return {path: read_text(path) for path in (APPARMOR_SYSCTL, MAX_USERNS_SYSCTL)}


def probe(cgroup_root: str = "") -> Capabilities:
    if sys.platform != "linux":
        fix = "run on Linux; elsewhere isolated tests run in-process"
        return Capabilities((Check("linux", False, f"platform is {sys.platform}", fix),))
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
