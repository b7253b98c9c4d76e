"""Who pytest runs as: real root, or an ordinary user who builds rootless sandboxes in a
user namespace of its own."""

from __future__ import annotations

import os

from .. import ffi


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def is_real_root() -> bool:
    """euid 0 in the initial user namespace (root in a user namespace is rootless here)."""
    if os.geteuid() != 0:
        return False
    uid_map = read_text("/proc/self/uid_map") or ""
    return uid_map.split() == ["0", "0", "4294967295"]


def enter_own_userns() -> None:
    """Rootless: a new user namespace mapping our own uid and gid (setgroups denied first)."""
    uid, gid = os.geteuid(), os.getegid()
    ffi.unshare(ffi.CLONE_NEWUSER)
    for name, value in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                        ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
        with open(f"/proc/self/{name}", "w") as f:
            f.write(value)
