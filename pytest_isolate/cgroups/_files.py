"""Reading and writing cgroupfs files, shared by the v1 and v2 backends."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable

from . import CgroupError


def _read(path: str) -> str:
    # os-level calls: a third of the cost of open() with its text layer, per test.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 1 << 16).decode()
    finally:
        os.close(fd)


def _write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(exc.errno, f"cannot write {value!r} to {path}: {exc.strerror}") from None


def _keyed(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def _makedirs(path: str) -> None:
    try:  # once its parents are made, the usual case: a group per sandbox
        os.mkdir(path)
        return
    except FileNotFoundError:
        pass
    except FileExistsError:
        if os.path.isdir(path):
            return
        raise
    # A concurrent session may remove the shared top directory between our checks.
    for _ in range(3):
        try:
            os.makedirs(path, exist_ok=True)
            return
        except FileNotFoundError:
            continue
    os.makedirs(path, exist_ok=True)


def _tree(path: str) -> list[str]:
    """The group directory ``path`` and every group below it, deepest first."""
    out = []
    for top, subdirs, _ in os.walk(path, topdown=False):
        out += [os.path.join(top, s) for s in subdirs]
    return [*out, path]


def _rmdir_each(dirs: Iterable[str], end: float) -> None:
    """Remove each group directory, in order; one still busy (its last processes are being
    reaped) is tried again until ``end`` (a ``time.monotonic()`` value)."""
    for d in dirs:
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > end:
                    raise CgroupError(exc.errno, f"cannot remove {d}: {exc.strerror}") from None
                time.sleep(0.0005)


def _rmdir_quietly(path: str) -> bool:
    """Remove an (empty) cgroup directory if it can be removed now; whether it was."""
    try:
        os.rmdir(path)
        return True
    except OSError:
        return False
