"""``fork`` whose child is the caller's parent's child (``clone(CLONE_PARENT)``).

The fork server's children are made pytest's own children, so pytest waits for them,
reads their exit status and signals them exactly as it does the processes it forks
itself.
"""

from __future__ import annotations

import functools
import os
import signal
from typing import Any

try:
    import ctypes
except ImportError:  # pragma: no cover - a Python built without ctypes: no fork server
    ctypes = None  # type: ignore[assignment]

# The clone(2) system call's number, where it takes the flags first (and the rest may
# be zero): elsewhere there is no fork server, and processes are forked as before.
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120, "s390x": 120}
CLONE_PARENT = 0x00008000


def supported() -> bool:
    """Linux on a machine whose clone(2) we know, and CPython (its fork steps, via ctypes)."""
    return (
        hasattr(os, "uname")
        and os.uname().machine in _SYS_CLONE
        and ctypes is not None
        and hasattr(ctypes, "pythonapi")
    )


@functools.cache
def _clone() -> tuple[Any, tuple[Any, ...]]:
    """libc's ``syscall`` (called with the GIL held: ``PyDLL``) and its arguments for
    clone(CLONE_PARENT | SIGCHLD) here, made once."""
    libc = ctypes.PyDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    number = ctypes.c_long(_SYS_CLONE[os.uname().machine])
    zero = ctypes.c_ulong(0)
    return libc.syscall, (
        number,
        ctypes.c_ulong(CLONE_PARENT | signal.SIGCHLD),
        zero,
        zero,
        zero,
        zero,
    )


def fork_as_sibling() -> int:
    """``os.fork()``, except that the child is our parent's child, not ours.

    Python's own before/after-fork steps run as in ``os.fork`` (locks, ``at_fork``
    handlers, the thread state); the GIL stays held throughout.
    """
    syscall, args = _clone()
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid: int = syscall(*args)
    err = ctypes.get_errno()
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"{os.strerror(err)} (clone)")
    return pid
