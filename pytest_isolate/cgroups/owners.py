"""Who owns a cgroup directory: ``<PID>.<STARTTIME>`` names, staleness, and the sweep of
the groups of runs that are gone (shared by both backends).

A group is touched only if it is ours or its owner is gone: a name that is not an owner
token is never stale.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from . import Group


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
