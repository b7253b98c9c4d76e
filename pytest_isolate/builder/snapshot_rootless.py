"""The sandbox's filesystem without real root, and without a snapshot.

Rootless (inside a user namespace of our own), an overlay with ``lowerdir=/`` fails:
``/`` has submounts, which are locked in the new namespace (the kernel refuses to
clone a mount with locked children; the fix for CVE-2021-3732). So the root is a tmpfs
holding one overlay per top-level directory (``userxattr``), descending a level where
a directory has mounts below it, with the top-level symlinks recreated, a minimal /dev
of bind-mounted host device nodes, sysfs and a fresh /proc (or the host's, where a
masked /proc makes the kernel refuse a fresh one: "mount_too_revealing").

``no_snapshot`` is the fallback where overlayfs is not available at all: the host's
filesystem as it is (writes reach the host), with a fresh /proc for the pid namespace.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Final

from .. import ffi
from . import unmapped
from .upper import write_manifest

DEVICES: Final = ("null", "zero", "full", "random", "urandom", "tty")
SPECIAL: Final = ("proc", "sys", "dev")
MAX_DEPTH: Final = 3
_LOCKED: Final = ffi.MS_NOSUID | ffi.MS_NODEV | ffi.MS_NOEXEC


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


class _Builder:
    def __init__(self, scratch: str, skip: str, stand_ins: Sequence[str] = (),
                 inner: Sequence[str] = ()) -> None:  # fmt: skip
        self.scratch = scratch
        self.skip = skip
        self.count = 0
        self.problems: list[str] = []
        self.stand_ins = stand_ins  # see ``unmapped``
        self.inner = inner  # the roots of the overlays mounted over the top-level ones
        self.layers: list[tuple[str, str]] = []  # (upper directory, host path): ``upper``
        self.copies: list[tuple[str, str]] = []

    def overlay(self, lower: str, target: str) -> None:
        self.count += 1
        upper, work = f"{self.scratch}/u{self.count}", f"{self.scratch}/w{self.count}"
        os.mkdir(upper)
        os.mkdir(work)
        # What overlayfs could not copy up (an owner or group we cannot map), and the
        # mode and times of the overlay's root (it shows its upper directory's).
        problems = unmapped.pre_create(lower, upper, self.stand_ins, self.inner)
        options = f"lowerdir={_escape(lower)},upperdir={upper},workdir={work},userxattr"
        try:
            ffi.mount("overlay", target, "overlay", 0, options)
        except OSError:
            shutil.rmtree(upper)
            os.rmdir(work)
            raise
        self.problems += problems
        self.layers.append((f"u{self.count}", lower))

    def entry(self, path: str, target: str, depth: int) -> None:
        """Reproduce one host path at ``target`` (which does not exist yet)."""
        if os.path.islink(path):
            os.symlink(os.readlink(path), target)
            return
        if not os.path.isdir(path):
            if os.path.isfile(path):  # a file at the top level: a private copy
                with open(path, "rb") as src, open(target, "wb") as dst:
                    dst.write(src.read(1 << 20))
                self.copies.append((os.path.relpath(target, self.scratch), path))
            return
        os.mkdir(target)
        if path == self.skip:
            return
        try:
            self.overlay(path, target)
            return
        except OSError as exc:
            error = exc
        if depth >= MAX_DEPTH:
            self.problems.append(f"{path}: {error.strerror} (not visible inside)")
            return
        # Mounts below it are locked: overlay its entries one by one instead.
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            self.problems.append(f"{path}: {exc.strerror} (not visible inside)")
            return
        for name in names:
            try:
                self.entry(os.path.join(path, name), os.path.join(target, name), depth + 1)
            except OSError as exc:
                self.problems.append(f"{os.path.join(path, name)}: {exc.strerror}")


def _make_dev(dev: str) -> None:
    ffi.mount("tmpfs", dev, "tmpfs", ffi.MS_NOSUID | ffi.MS_NOEXEC, "mode=0755,size=64k")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            with open(f"{dev}/{name}", "w"):
                pass
            ffi.mount(f"/dev/{name}", f"{dev}/{name}", None, ffi.MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("ptmx", "pts/ptmx")):  # fmt: skip
        os.symlink(target, f"{dev}/{name}")
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(f"{dev}/{name}", 0o755)
    ffi.mount("devpts", f"{dev}/pts", "devpts", ffi.MS_NOSUID | ffi.MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=0620")  # fmt: skip
    ffi.mount("shm", f"{dev}/shm", "tmpfs", ffi.MS_NOSUID | ffi.MS_NODEV, "mode=1777")
    try:
        ffi.mount("mqueue", f"{dev}/mqueue", "mqueue", _LOCKED)
    except OSError:
        os.rmdir(f"{dev}/mqueue")


def _mount_proc(target: str, fresh: bool) -> None:
    if fresh:
        ffi.mount("proc", target, "proc", _LOCKED)
    else:  # the kernel refuses a fresh one (a masked /proc); the session's warning says so
        ffi.mount("/proc", target, None, ffi.MS_BIND | ffi.MS_REC)


def build_rootless_root(
    scratch: str,
    fresh_proc: bool = True,
    writable: Sequence[str] = (),
    stand_ins: Sequence[str] = (),
    diff: bool = False,
) -> tuple[list[str], int]:
    """Build the snapshot under ``scratch`` and move it over ``/``; rootless.

    Runs inside our own user namespace, in fresh mount and pid namespaces. Returns one
    line per host path that could not be snapshotted, and with ``diff`` a descriptor of
    the scratch tmpfs holding the upper layers (``upper.write_manifest``; else -1).

    ``writable``: directories (``$HOME``, the working directory) that get an overlay of
    their own. A write below a directory owned by an unmapped uid (``/home`` is root's)
    would otherwise fail with EOVERFLOW: copying that directory up means creating it in
    the upper layer with an owner this user namespace cannot represent.

    ``stand_ins``: host paths below which writes would fail the same way
    (``unmapped.find``): each overlay's upper directory gets them before it is mounted.
    """
    ffi.mount(None, "/", None, ffi.MS_REC | ffi.MS_PRIVATE)
    ffi.mount("pytest-isolate", scratch, "tmpfs", ffi.MS_NOSUID | ffi.MS_NODEV, "mode=0700")
    root = f"{scratch}/root"
    os.mkdir(root)
    ffi.mount(root, root, None, ffi.MS_BIND)  # a mount point, to be moved over /
    inner = sorted({os.path.normpath(p) for p in writable if p})
    inner = [p for p in inner if p.count("/") >= 2 and p.split("/")[1] not in SPECIAL]
    builder = _Builder(scratch, skip=scratch, stand_ins=stand_ins, inner=inner)
    for name in sorted(os.listdir("/")):
        if name in SPECIAL:
            os.mkdir(f"{root}/{name}")
            continue
        try:
            builder.entry(f"/{name}", f"{root}/{name}", 1)
        except OSError as exc:
            builder.problems.append(f"/{name}: {exc.strerror}")
    for path in sorted(inner, key=len):  # not "/" nor a top-level one: overlay roots already
        if os.path.isdir(path) and os.path.isdir(root + path):
            builder.inner = [r for r in inner if r != path]
            try:
                builder.overlay(path, root + path)
            except OSError as exc:
                builder.problems.append(f"{path}: {exc.strerror} (new files may fail there)")
    _make_dev(f"{root}/dev")
    try:
        ffi.mount("sysfs", f"{root}/sys", "sysfs", _LOCKED | ffi.MS_RDONLY)
    except OSError:
        ffi.mount("/sys", f"{root}/sys", None, ffi.MS_BIND | ffi.MS_REC)
    _mount_proc(f"{root}/proc", fresh_proc)
    scratch_fd = write_manifest(scratch, builder.layers, builder.copies) if diff else -1
    os.chdir(root)
    ffi.mount(root, "/", None, ffi.MS_MOVE)
    os.chroot(".")
    os.chdir("/")
    return builder.problems, scratch_fd


def no_snapshot(fresh_proc: bool = True) -> list[str]:
    """No overlayfs: keep the host's filesystem (writes reach it), private mounts, and a
    /proc of the sandbox's pid namespace."""
    problems: list[str] = []
    ffi.mount(None, "/", None, ffi.MS_REC | ffi.MS_PRIVATE)
    if fresh_proc:
        ffi.mount("proc", "/proc", "proc", _LOCKED)
    return problems
