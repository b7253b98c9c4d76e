"""The fork server: test processes forked ahead from a copy of pytest that does nothing else.

Every fork write-protects the forking process's memory, and while any child still
shares a page, each page the forking process writes is copied. pytest writes all
the time (reports, logging, our own bookkeeping), and with a test process always
alive beside it (the running one, the next one waiting), it paid a copy for every
page it touched, for every test: about as much CPU as the fork itself.

So the processes forked ahead (``controller.Spare``) come from a fork server: a
child of pytest, forked once at the first of them, that only ever receives
"fork for item N" (with the sandbox's descriptors) and forks. Its children are
made pytest's own children (``CLONE_PARENT``): pytest waits for them, reads their
exit status and signals them exactly as it does the processes it forks itself.
pytest, which forks no more, copies each page it writes at most once.

The server is a snapshot of pytest taken when it started: it is replaced as soon
as pytest's process runs fixture code (``_compat.fixture_runs``), the same rule
that decides whether a process forked ahead is still of use.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import signal
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NoReturn

import pytest

from . import _ffi, child
from .forking import fork_quietly

try:
    import ctypes
except ImportError:  # pragma: no cover - a Python built without ctypes: no fork server
    ctypes = None  # type: ignore[assignment]

# The clone(2) system call's number, where it takes the flags first (and the rest may
# be zero): elsewhere there is no fork server, and processes are forked as before.
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120, "s390x": 120}
CLONE_PARENT = 0x00008000
_FD_FIELDS = ("report_fd", "init_pidfd", "turn_fd")
# A request: the item's index, whether the child is born in the sandbox's pid namespace,
# how many join and namespace descriptors follow the first three; then the other fields
# of the context, as JSON (read by the child only). The answer: a pid, or -errno.
_REQUEST = struct.Struct("<iBBB")
_ANSWER = struct.Struct("<q")
# The context's other fields, sent as they are (descriptors go apart, as SCM_RIGHTS).
_PLAIN_FIELDS = tuple(
    f.name
    for f in fields(child.ChildContext)
    if f.name not in (*_FD_FIELDS, "close_fds", "join_fds", "ns_fds")
)


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


@dataclass
class ForkServer:
    pid: int
    sock: socket.socket
    fixture_runs: int
    """``_compat.fixture_runs`` when it started: the state of pytest it holds a copy of."""

    @classmethod
    def start(cls, items: Sequence[pytest.Item], close: Sequence[int], runs: int) -> ForkServer:
        """Fork the server; ``close``: pytest's descriptors it must not keep (sandboxes',
        the builder's). Every item's location is worked out first, once for both."""
        for item in items:
            _ = item.location
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        gc.freeze()  # neither the server nor its children collect (and so copy) our heap
        try:
            pid = fork_quietly()
        finally:
            gc.unfreeze()
        if pid == 0:  # pragma: no cover - the server
            try:
                ours.close()
                for fd in close:
                    os.close(fd)
                gc.freeze()
                _serve(theirs, items)
            finally:
                os._exit(0)
        theirs.close()
        return cls(pid, ours, runs)

    def fork(self, index: int, ctx: child.ChildContext, pidns: bool) -> int:
        """A test process for ``items[index]`` with ``ctx`` (its descriptors are sent; the
        caller keeps and closes its own). ``pidns``: born in the pid namespace of
        ``ctx.init_pidfd``. Raises OSError if the server is gone or could not fork."""
        plain = {name: getattr(ctx, name) for name in _PLAIN_FIELDS}
        fds = [ctx.report_fd, ctx.init_pidfd, ctx.turn_fd, *ctx.join_fds, *ctx.ns_fds]
        head = _REQUEST.pack(index, pidns, len(ctx.join_fds), len(ctx.ns_fds))
        socket.send_fds(self.sock, [head + json.dumps(plain).encode()], fds)
        answer = self.sock.recv(_ANSWER.size)
        if len(answer) != _ANSWER.size:
            raise OSError("the fork server is gone")
        (pid,) = _ANSWER.unpack(answer)
        if pid < 0:
            raise OSError(-pid, f"{os.strerror(-pid)} (fork server)")
        return int(pid)

    def stop(self) -> None:
        self.sock.close()  # it leaves at EOF
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _serve(sock: socket.socket, items: Sequence[pytest.Item]) -> NoReturn:  # pragma: no cover
    """The server's loop: one request, one fork. Runs no test code itself, and as little
    of its own as it can: every page it writes while a test process shares it is copied."""
    on_interrupt = signal.getsignal(signal.SIGINT)  # pytest's, for the test processes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # pytest decides what Ctrl-C ends
    _ffi.prctl(_ffi.PR_SET_PDEATHSIG, signal.SIGKILL)
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    while True:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 64)
        if not data:
            os._exit(0)
        index, pidns, n_join, n_ns = _REQUEST.unpack_from(data)
        pid = -1
        try:
            if pidns:
                _ffi.setns(fds[1], _ffi.CLONE_NEWPID)
            try:
                pid = fork_as_sibling()
            finally:
                if pid != 0 and pidns:
                    _ffi.setns(own_pidns, _ffi.CLONE_NEWPID)
        except OSError as exc:
            pid = -(exc.errno or 1)
        if pid == 0:
            signal.signal(signal.SIGINT, on_interrupt)
            ctx = child.ChildContext(
                report_fd=fds[0],
                init_pidfd=fds[1],
                turn_fd=fds[2],
                join_fds=tuple(fds[3 : 3 + n_join]),
                ns_fds=tuple(fds[3 + n_join : 3 + n_join + n_ns]),
                close_fds=(sock.fileno(), own_pidns),
                **json.loads(data[_REQUEST.size :]),
            )
            child.run(items[index], None, ctx)
        for fd in fds:
            os.close(fd)
        sock.send(_ANSWER.pack(pid))
