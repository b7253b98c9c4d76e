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
def _clone() -> tuple[Any, int]:
    """libc's ``syscall`` (called with the GIL held: ``PyDLL``) and clone's number here."""
    libc = ctypes.PyDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc.syscall, _SYS_CLONE[os.uname().machine]


def fork_as_sibling() -> int:
    """``os.fork()``, except that the child is our parent's child, not ours.

    Python's own before/after-fork steps run as in ``os.fork`` (locks, ``at_fork``
    handlers, the thread state); the GIL stays held throughout.
    """
    syscall, number = _clone()
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = int(
        syscall(ctypes.c_long(number), ctypes.c_ulong(CLONE_PARENT | signal.SIGCHLD),
                ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    )  # fmt: skip
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
        plain["join_fds"] = len(ctx.join_fds)
        plain["ns_fds"] = len(ctx.ns_fds)
        fds = [ctx.report_fd, ctx.init_pidfd, ctx.turn_fd, *ctx.join_fds, *ctx.ns_fds]
        data = json.dumps({"item": index, "ctx": plain, "pidns": pidns}).encode()
        socket.send_fds(self.sock, [data], fds)
        answer = self.sock.recv(256)
        if not answer:
            raise OSError("the fork server is gone")
        reply = json.loads(answer)
        if "error" in reply:
            raise OSError(reply["errno"], reply["error"])
        return int(reply["pid"])

    def stop(self) -> None:
        self.sock.close()  # it leaves at EOF
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _serve(sock: socket.socket, items: Sequence[pytest.Item]) -> NoReturn:  # pragma: no cover
    """The server's loop: one request, one fork. Runs no test code itself."""
    on_interrupt = signal.getsignal(signal.SIGINT)  # pytest's, for the test processes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # pytest decides what Ctrl-C ends
    _ffi.prctl(_ffi.PR_SET_PDEATHSIG, signal.SIGKILL)
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    while True:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 64)
        if not data:
            os._exit(0)
        request = json.loads(data)
        sent = request["ctx"]
        n_join, n_ns = sent.pop("join_fds"), sent.pop("ns_fds")
        ctx = child.ChildContext(
            report_fd=fds[0],
            init_pidfd=fds[1],
            turn_fd=fds[2],
            join_fds=tuple(fds[3 : 3 + n_join]),
            ns_fds=tuple(fds[3 + n_join : 3 + n_join + n_ns]),
            close_fds=(sock.fileno(), own_pidns),
            **sent,
        )
        pid = -1
        try:
            if request["pidns"]:
                _ffi.setns(ctx.init_pidfd, _ffi.CLONE_NEWPID)
            try:
                pid = fork_as_sibling()
            finally:
                if pid != 0 and request["pidns"]:
                    _ffi.setns(own_pidns, _ffi.CLONE_NEWPID)
        except OSError as exc:
            reply = {"error": str(exc), "errno": exc.errno or 0}
        else:
            if pid == 0:
                signal.signal(signal.SIGINT, on_interrupt)
                child.run(items[request["item"]], None, ctx)
            reply = {"pid": pid}
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps(reply).encode())
