"""cffi (ABI mode) bindings for the few syscalls the standard library lacks.

Python 3.11 has no ``os.unshare``/``os.setns`` and no Python has ``mount``,
``prctl`` or ``clone``. These are thin wrappers: each retries on EINTR and raises
``OSError(errno, strerror)`` on failure, like ``os``.
Nothing is compiled: the symbols are looked up in the already loaded libc, with
declarations pre-parsed into ``_abi.py`` (see ``build.py``).
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Any

try:
    from ._abi import ffi as _ffi  # pre-parsed declarations: no C parser loaded
except ImportError:  # pragma: no cover - a cffi that cannot read the generated file
    from cffi import FFI

    from .build import CDEF

    _ffi = FFI()
    _ffi.cdef(CDEF)
try:
    _libc: Any = _ffi.dlopen(None)
except OSError:  # pragma: no cover - Windows: no sandboxes, and none of these calls
    _libc = None

# <linux/sched.h>
CLONE_NEWTIME = 0x00000080  # unshare(2) and setns(2) only
CLONE_VM = 0x00000100
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_MOVE = 8192
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# <linux/keyctl.h>
KEYCTL_JOIN_SESSION_KEYRING = 1
# keyctl(2) has no libc wrapper: the system call, by number
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "i686": 288, "armv7l": 311, "ppc64le": 280,
               "s390x": 280, "riscv64": 219}  # fmt: skip

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38


def _retry(name: str, call: Any, *args: Any) -> int:
    while True:
        ret = int(call(*args))
        if ret != -1:
            return ret
        err = _ffi.errno
        if err != errno.EINTR:
            raise OSError(err, f"{os.strerror(err)} ({name})")


def _cstr(value: str | None) -> Any:
    return _ffi.NULL if value is None else value.encode()


def unshare(flags: int) -> None:
    _retry(f"unshare {flags:#x}", _libc.unshare, flags)


def setns(fd: int, nstype: int) -> None:
    """Join the namespace(s) ``fd`` refers to (a /proc/PID/ns file or a pidfd)."""
    _retry(f"setns {nstype:#x}", _libc.setns, fd, nstype)


def mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    ret = _libc.mount(_cstr(source), target.encode(), _cstr(fstype), flags, _cstr(data))
    if ret == -1:
        err = _ffi.errno
        raise OSError(err, f"{os.strerror(err)}: mount {fstype or ''} {source or ''} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    _retry(f"umount2 {target}", _libc.umount2, target.encode(), flags)


def join_session_keyring() -> None:
    """Give this process a new anonymous session keyring (``keyctl(2)``
    KEYCTL_JOIN_SESSION_KEYRING with no name): the keys it adds to its session keyring
    from now on are its own, and those of the keyring it inherited are out of reach."""
    machine = os.uname().machine
    number = _SYS_KEYCTL.get(machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"keyctl: no system call number known for {machine}")
    args = (number, KEYCTL_JOIN_SESSION_KEYRING, 0)
    _retry("keyctl", _libc.syscall, *(_ffi.cast("long", arg) for arg in args))


def prctl(option: int, arg2: int = 0) -> int:
    return _retry(f"prctl {option}", _libc.prctl, option, arg2, 0, 0, 0)


# The stack of clone_waiting's children: each only ever sits in pause(), on a few hundred
# bytes of it. One serves them all: a child killed before it ran, or while in pause(), dies
# in the kernel and never comes back to it.
_STACK_SIZE = 64 * 1024
_stack: Any = None
_SIGSET_SIZE = 128  # glibc's sigset_t
_all_signals: Any = None
_saved_mask: Any = None


def clone_waiting(flags: int) -> int:
    """Start a child in the new namespaces ``flags`` names, doing nothing until it is killed.

    The child shares our memory (``CLONE_VM``: nothing is copied, so this costs a small
    fraction of a fork) and runs no Python: libc's ``pause()`` on a stack of its own, with
    every signal blocked, so that it never returns. Its only use is to hold a namespace
    while we open it through ``/proc/PID/ns``. The caller SIGKILLs and reaps it.
    """
    global _stack, _all_signals, _saved_mask
    if _stack is None:
        _stack = _ffi.new("char[]", _STACK_SIZE)
        _all_signals = _ffi.new("char[]", _SIGSET_SIZE)
        _saved_mask = _ffi.new("char[]", _SIGSET_SIZE)
        _libc.sigfillset(_all_signals)
    fn = _ffi.cast("int(*)(void *)", _ffi.addressof(_libc, "pause"))
    # libc's, not signal.pthread_sigmask: that one builds a set of every signal, each time.
    _libc.pthread_sigmask(signal.SIG_BLOCK, _all_signals, _saved_mask)
    try:
        pid = int(
            _libc.clone(
                fn,
                _stack + _STACK_SIZE,
                _ffi.cast("int", flags | CLONE_VM | signal.SIGCHLD),
                _ffi.NULL,
            )
        )
        err = _ffi.errno
    finally:
        _libc.pthread_sigmask(signal.SIG_SETMASK, _saved_mask, _ffi.NULL)
    if pid == -1:
        raise OSError(err, f"{os.strerror(err)} (clone {flags:#x})")
    return pid
