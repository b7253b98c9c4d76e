"""The sandbox's filesystem: an overlay snapshot of the host, moved over ``/``.

``plan_mounts`` is pure (it reads a parsed mountinfo); ``build_tree`` runs as real
root inside a fresh mount namespace, ``mount_proc`` inside the fresh pid namespace.

Kernel facts this depends on (see the design notes):
- Without ``MS_REC|MS_PRIVATE`` on ``/`` first, mounts propagate back to the host
  wherever ``/`` is shared (the systemd default).
- An overlay with ``lowerdir=/`` shows the root filesystem only, not its submounts: every
  other real filesystem gets its own overlay (never a read-write bind: writes would leak),
  and /proc, /sys and /dev are mounted fresh.
- A fresh proc can only be mounted while a fully visible proc is in the mount namespace
  ("mount_too_revealing"), so it is mounted before the old root is detached.
- The new root is moved over ``/`` (``MS_MOVE``) and entered with chroot. A bare chroot
  into a subdirectory is escapable with CAP_SYS_CHROOT (``chroot x; cd ../..``), but here
  every ``..`` walk ends at the old root's ``/``, where the kernel steps down into the
  mount on top of it: the snapshot. The old tree stays mounted underneath, out of reach:
  unmounting needs CAP_SYS_ADMIN over this mount namespace, which the test never holds,
  and mounts copied into any namespace the test creates are locked. (pivot_root plus a
  lazy unmount of the old root gives the same result at ~3 ms instead of ~0.05 ms.)
- Pages written to the tmpfs upper layer are charged to the writer's memory cgroup, so
  file writes count against the test's ``mem`` cap.
- The old tree keeps the host's /proc and /sys, and the kernel lets a user namespace mount
  a fresh proc or sysfs wherever one of the same type is "fully visible" in its mount
  namespace, reachable or not (``mount_too_revealing``): a nested user namespace of the
  test's could then write host sysctls and sysfs knobs (uid 0 inside is the host's). So
  those are detached from the old tree once pid 1 runs (``hide_revealing``). The
  sandbox's own are not fully visible: its /sys is read-only, and its /proc has read-only
  mounts over non-empty directories (/proc/sys, ...), which the kernel locks.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from .. import ffi
from ..mountinfo import MountEntry

# Mounted fresh in the sandbox; anything the host mounts below them is not carried over.
FRESH: Final = ("/proc", "/sys", "/dev")
# Kernel interfaces rather than data: not reproduced outside the fresh trees.
PSEUDO_FS: Final = frozenset(
    {
        "proc", "sysfs", "cgroup", "cgroup2", "devpts", "devtmpfs", "mqueue", "debugfs",
        "tracefs", "securityfs", "pstore", "bpf", "configfs", "fusectl", "binfmt_misc",
        "autofs", "efivarfs", "hugetlbfs", "rpc_pipefs", "nsfs", "selinuxfs",
    }
)  # fmt: skip
# /proc entries that stay read-only inside: uid 0 in the sandbox is the global uid 0, and
# sysctl writes and the sysrq trigger check the uid, not a capability.
PROC_READONLY: Final = ("sys", "sysrq-trigger", "irq", "bus", "fs")
DEVICES: Final = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                  ("urandom", 1, 9), ("tty", 5, 0))  # fmt: skip
_FLAG_OPTIONS: Final = {
    "ro": ffi.MS_RDONLY,
    "nosuid": ffi.MS_NOSUID,
    "nodev": ffi.MS_NODEV,
    "noexec": ffi.MS_NOEXEC,
}
MAX_COPIED_FILE: Final = 1 << 20
# What a user namespace may mount afresh where one is fully visible (see above).
REVEALING_FS: Final = frozenset({"proc", "sysfs"})


@dataclass(frozen=True)
class MountStep:
    """How one host mount is reproduced in the sandbox."""

    kind: Literal["overlay", "bind-ro", "copy-file", "bind-rw"]
    path: str
    flags: int


def share_steps(shares: Iterable[str]) -> list[MountStep]:
    """Host paths shared read-write: bound over the snapshot after every other step.

    The one exception to "writes vanish": what a test writes there reaches the host.
    """
    return [MountStep("bind-rw", path, 0) for path in shares]


def _under(path: str, top: str) -> bool:
    top = top.rstrip("/") or "/"
    return path == top or path.startswith(top.rstrip("/") + "/")


def mount_flags(entry: MountEntry) -> int:
    flags = 0
    for option, flag in _FLAG_OPTIONS.items():
        if option in entry.mount_options:
            flags |= flag
    return flags


def plan_mounts(entries: Iterable[MountEntry], skip: Sequence[str] = ()) -> list[MountStep]:
    """Steps for every host mount, parents before children; ``/`` first."""
    top: dict[str, MountEntry] = {}
    for entry in entries:  # later entries are mounted over earlier ones
        top[entry.mount_point] = entry
    steps = []
    for path in sorted(top, key=lambda p: (p.count("/") if p != "/" else 0, p)):
        entry = top[path]
        if path == "/":
            steps.append(MountStep("overlay", "/", mount_flags(entry) & ~ffi.MS_RDONLY))
            continue
        if any(_under(path, fresh) for fresh in FRESH) or any(_under(path, s) for s in skip):
            continue
        if entry.fstype in PSEUDO_FS:
            continue
        flags = mount_flags(entry)
        if os.path.isdir(path) or not os.path.exists(path):
            kind: Literal["overlay", "bind-ro", "copy-file"] = (
                "bind-ro" if flags & ffi.MS_RDONLY else "overlay"
            )
        else:  # a file bind-mounted over another: a private copy, or read-only if it was
            kind = "bind-ro" if flags & ffi.MS_RDONLY else "copy-file"
        steps.append(MountStep(kind, path, flags))
    if not steps or steps[0].path != "/":
        steps.insert(0, MountStep("overlay", "/", 0))
    return steps


def revealing_mounts(entries: Iterable[MountEntry], skip: Sequence[str] = ()) -> list[str]:
    """The host's proc and sysfs mount points (only the topmost of nested ones), relative
    to ``/``: what ``hide_revealing`` detaches from a sandbox's copy of the host's tree."""
    found: list[str] = []
    for path in sorted({e.mount_point for e in entries if e.fstype in REVEALING_FS}):
        if path != "/" and not any(_under(path, p) for p in (*found, *skip)):
            found.append(path)
    return [path.lstrip("/") for path in found]


def hide_revealing(old_root: int, paths: Sequence[str]) -> list[str]:
    """Detach ``paths`` (``revealing_mounts``) from the old tree under the snapshot;
    ``old_root``: a descriptor of that tree's ``/``. Returns the ones that could not be."""
    problems = []
    os.fchdir(old_root)
    for path in paths:
        try:
            ffi.umount2(path, ffi.MNT_DETACH)
        except OSError as exc:
            problems.append(f"/{path}: not hidden from the sandbox ({exc.strerror})")
    return problems


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _overlay(lower: str, target: str, scratch: str, index: int, flags: int) -> None:
    upper = f"{scratch}/u{index}"
    work = f"{scratch}/w{index}"
    os.mkdir(upper)
    os.mkdir(work)
    options = f"lowerdir={_escape(lower)},upperdir={upper},workdir={work}"
    ffi.mount("overlay", target, "overlay", flags, options)


def _bind_readonly(source: str, target: str, extra: int = 0) -> None:
    """``source`` at ``target``, read-only; or nothing and an OSError.

    Not recursive: a remount applies to one mount only, so the host's submounts would be
    read-write below it (a proc there would write host sysctls). Each submount has its
    own step in the plan; proc, sysfs and the other kernel interfaces below are left out.
    """
    ffi.mount(source, target, None, ffi.MS_BIND)
    try:
        ffi.mount(None, target, None, ffi.MS_BIND | ffi.MS_REMOUNT | ffi.MS_RDONLY | extra)
    except OSError:
        ffi.umount2(target, ffi.MNT_DETACH)  # never left read-write
        raise


def _make_dev(dev: str) -> None:
    nosuid = ffi.MS_NOSUID
    ffi.mount("tmpfs", dev, "tmpfs", nosuid | ffi.MS_NOEXEC, "mode=0755,size=64k")
    for name, major, minor in DEVICES:
        path = f"{dev}/{name}"
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("ptmx", "pts/ptmx"), ("core", "/proc/kcore")):  # fmt: skip
        os.symlink(target, f"{dev}/{name}")
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(f"{dev}/{name}", 0o755)
    ffi.mount("devpts", f"{dev}/pts", "devpts", nosuid | ffi.MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=0620")  # fmt: skip
    ffi.mount("shm", f"{dev}/shm", "tmpfs", nosuid | ffi.MS_NODEV, "mode=1777")
    try:
        ffi.mount("mqueue", f"{dev}/mqueue", "mqueue", nosuid | ffi.MS_NODEV | ffi.MS_NOEXEC)
    except OSError:
        os.rmdir(f"{dev}/mqueue")  # POSIX message queues not built into this kernel


def root_of(scratch: str) -> str:
    return f"{scratch}/root"


def build_tree(scratch: str, steps: Sequence[MountStep]) -> list[str]:
    """Everything but /proc: mount the snapshot at ``root_of(scratch)``.

    Runs as real root in a fresh mount namespace; the pid namespace does not matter yet, so
    the sandbox builder can do this itself and leave only /proc to the test process.
    Returns one line per host mount that could not be reproduced faithfully (those are
    read-only or missing inside).
    """
    problems: list[str] = []
    ffi.mount(None, "/", None, ffi.MS_REC | ffi.MS_PRIVATE)
    ffi.mount("pytest-isolate", scratch, "tmpfs", ffi.MS_NOSUID | ffi.MS_NODEV, "mode=0700")
    root = root_of(scratch)
    os.mkdir(root)
    for index, step in enumerate(steps):
        target = root + step.path if step.path != "/" else root
        try:
            if step.kind == "overlay":
                _overlay(step.path, target, scratch, index, step.flags)
            elif step.kind == "bind-ro":
                _bind_readonly(step.path, target, step.flags)
            elif step.kind == "bind-rw":
                ffi.mount(step.path, target, None, ffi.MS_BIND | ffi.MS_REC)
            else:
                copy = f"{scratch}/f{index}"
                if os.path.getsize(step.path) > MAX_COPIED_FILE:
                    _bind_readonly(step.path, target)
                else:
                    with open(step.path, "rb") as src, open(copy, "wb") as dst:
                        dst.write(src.read())
                    os.chmod(copy, stat.S_IMODE(os.stat(step.path).st_mode))
                    ffi.mount(copy, target, None, ffi.MS_BIND)
        except OSError as exc:
            if step.path == "/":
                raise
            problems.append(f"{step.path}: {exc.strerror or exc}")
            try:
                _bind_readonly(step.path, target)
                problems[-1] += " (read-only inside)"
            except OSError:
                problems[-1] += " (not visible inside)"
    _make_dev(f"{root}/dev")
    ffi.mount("sysfs", f"{root}/sys", "sysfs", _PSEUDO_FLAGS | ffi.MS_RDONLY)
    return problems


_PSEUDO_FLAGS: Final = ffi.MS_NOSUID | ffi.MS_NODEV | ffi.MS_NOEXEC


def mount_proc(root: str) -> int:
    """A fresh /proc under ``root`` (a path, possibly relative), with its knobs read-only.

    procfs shows the pid namespace of the process that mounts it: this runs in the
    sandbox's pid namespace, with the capabilities that own its mounts (as root, the
    test process before it joins the user namespace; rootless, pid 1).
    Returns a descriptor (``O_PATH``, the caller closes it) of its /proc/sys from before
    it was made read-only: lookups from there stay on the writable mount, the one way
    left to the sysctls of the user namespace joined next (``forbid_cgroup_namespaces``).
    """
    ffi.mount("proc", f"{root}/proc", "proc", _PSEUDO_FLAGS)
    sysctl = os.open(f"{root}/proc/sys", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    for name in PROC_READONLY:
        path = f"{root}/proc/{name}"
        try:
            _bind_readonly(path, path, _PSEUDO_FLAGS)
        except FileNotFoundError:  # not in this kernel's build
            pass
        except BaseException:
            os.close(sysctl)
            raise
    return sysctl


def enter_root_mount() -> None:
    """Move the snapshot (the current directory, a mount) over ``/``.

    Whoever enters this mount namespace with setns() then lands in the snapshot: setns
    walks down the mounts stacked on the namespace's root.
    """
    ffi.mount(".", "/", None, ffi.MS_MOVE)


def enter_root() -> None:
    """Move the snapshot over ``/`` and chroot into it."""
    enter_root_mount()
    os.chroot(".")
    os.chdir("/")
