"""The test process: join the prepared sandbox, run one item's protocol, send the reports.

Runs in the child of ``os.fork()`` (pid 2 of the sandbox's pid namespace) and
never returns: it leaves with ``os._exit`` so that no atexit handler, buffered
output or finalizer of the parent runs twice.
"""

from __future__ import annotations

import errno
import faulthandler
import fcntl
import os
import signal
import struct
import sys
import traceback
from dataclasses import dataclass
from typing import NoReturn

import pytest

from . import _compat, _ffi, integrations, wire
from .sandbox.filesystem import mount_proc
from .sandbox.namespaces import ROOTLESS_NS_FILES, SANDBOX_NAMESPACES, set_hostname
from .spec import IsolationSpec

# Sent by the parent at the deadline: every thread's Python stack goes to the dump file.
# (macOS has no real-time signals; fork-only isolation uses SIGUSR2 there.)
DUMP_SIGNAL = signal.SIGRTMIN + 10 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2

_NS_FILES = (
    ("mnt", _ffi.CLONE_NEWNS),
    ("net", _ffi.CLONE_NEWNET),
    ("uts", _ffi.CLONE_NEWUTS),
    ("ipc", _ffi.CLONE_NEWIPC),
)


@dataclass(frozen=True)
class ChildContext:
    report_fd: int
    dump_fd: int
    init_pid: int
    init_pidfd: int
    join_fds: tuple[int, ...]
    hostname: str
    cwd: str
    close_fds: tuple[int, ...]
    rootless: bool = False
    """Join the user namespace first, then the others, then fork once more into the pid
    namespace (pytest itself may not join it)."""
    userns: bool = True
    """False where the host allows no user namespace: the sandbox has none to join."""
    sandboxed: bool = True
    """False for fork-only isolation: no sandbox to join, only a process group of our own."""
    namespaces: int = SANDBOX_NAMESPACES
    """The sandbox's namespaces this test joins (all but net with ``net="host"``)."""
    mount_proc: bool = False
    """Mount the sandbox's /proc: as root with a snapshot, where pid 1 runs no code of its
    own (``sandbox.namespaces``)."""
    ns_fds: tuple[int, ...] = ()
    """The sandbox's namespaces, opened by the builder: rootless, ``ROOTLESS_NS_FILES``; as
    root, its user namespace (none where the host allows none)."""
    turn_fd: int = -1
    """A test process forked ahead (``controller.Spare``): once in its sandbox, it waits on
    this pipe for its turn, which names the item after its own (``TURN``)."""


# The turn message: the index of the next item in ``session.items`` (-1: none).
TURN = struct.Struct("<i")


def namespaces_for(spec: IsolationSpec) -> int:
    if spec.net == "host":
        return SANDBOX_NAMESPACES & ~_ffi.CLONE_NEWNET
    return SANDBOX_NAMESPACES


class Channel:
    """The test process's end of the report pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, kind: bytes, payload: object) -> None:
        wire.send(self.fd, kind, payload)


_current: Channel | None = None


def current_channel() -> Channel | None:
    """The report channel, in a test process; None in pytest's own process."""
    return _current


def _setns_all(ctx: ChildContext, flags: int) -> None:
    try:
        _ffi.setns(ctx.init_pidfd, flags)
    except OSError as exc:  # pidfds name namespaces only since Linux 5.8
        if exc.errno != errno.EINVAL:
            raise
        for name, flag in (*_NS_FILES, ("user", _ffi.CLONE_NEWUSER)):
            if flags & flag:
                fd = os.open(f"/proc/{ctx.init_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _ffi.setns(fd, flag)
                finally:
                    os.close(fd)


def _become_sandbox_pid(ctx: ChildContext) -> None:
    """Fork once more: the new child is born in the sandbox's pid namespace and goes on as
    the test process; this one waits for it and exits the same way (for the controller)."""
    pid = os.fork()
    if pid == 0:
        return
    for fd in ctx.join_fds:
        os.close(fd)
    for sig in (DUMP_SIGNAL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: os.kill(pid, signum))
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


# ioctl on a namespace file: the parent user namespace, as a new file descriptor.
NS_GET_PARENT = 0xB702


def _enter_rootless(ctx: ChildContext) -> None:
    # Unprivileged, we hold capabilities over the sandbox's namespaces only from inside the
    # user namespace that owns them (the parent of init's own): join it first, then the
    # others, then init's inner user namespace, which owns none of them; then fork into the
    # pid namespace. Through the builder's descriptors: init is not dumpable, so neither
    # its pidfd nor /proc/<init>/ns lets us in.
    fds = dict(zip((name for name, _ in ROOTLESS_NS_FILES), ctx.ns_fds, strict=True))
    try:
        outer = fcntl.ioctl(fds["user"], NS_GET_PARENT)
        try:
            _ffi.setns(outer, _ffi.CLONE_NEWUSER)
        finally:
            os.close(outer)
        for name, flag in ROOTLESS_NS_FILES[1:]:
            if flag & (ctx.namespaces | _ffi.CLONE_NEWPID):
                _ffi.setns(fds[name], flag)
        set_hostname(ctx.hostname)
        _ffi.setns(fds["user"], _ffi.CLONE_NEWUSER)
    finally:
        for fd in ctx.ns_fds:
            os.close(fd)
    _become_sandbox_pid(ctx)
    for fd in ctx.join_fds:  # migration is checked against our (unchanged) uid
        os.write(fd, b"0")
        os.close(fd)


def enter_sandbox(ctx: ChildContext) -> None:
    if not ctx.sandboxed:
        # Fork-only isolation: a process group of our own, so that what the test starts can
        # be killed with it.
        os.setpgid(0, 0)
        return
    if ctx.rootless:
        _enter_rootless(ctx)
    else:
        _enter_rooted(ctx)
    # Changing credentials cleared both; the test is an ordinary process again.
    _ffi.prctl(_ffi.PR_SET_PDEATHSIG, signal.SIGKILL)
    _ffi.prctl(_ffi.PR_SET_DUMPABLE, 1)
    # As in bubblewrap: exec never grants privileges again (setuid bits, file capabilities).
    _ffi.prctl(_ffi.PR_SET_NO_NEW_PRIVS, 1)
    try:
        os.chdir(ctx.cwd)
    except OSError:
        os.chdir("/")


def _enter_rooted(ctx: ChildContext) -> None:
    # cgroups first: migration is checked against our credentials, which the user
    # namespace is about to reduce. (The builder opened the files for us.)
    for fd in ctx.join_fds:
        os.write(fd, b"0")
        os.close(fd)
    _setns_all(ctx, ctx.namespaces)
    if ctx.mount_proc:
        # procfs shows the pid namespace of whoever mounts it: ours, in which we were
        # born. Still real root here, so the test cannot undo it.
        mount_proc("")
    set_hostname(ctx.hostname)
    try:
        if ctx.userns and ctx.ns_fds:  # made by the builder; pid 1 is not in it
            _ffi.setns(ctx.ns_fds[0], _ffi.CLONE_NEWUSER)
        elif ctx.userns:  # made by pid 1 (no snapshot)
            _setns_all(ctx, _ffi.CLONE_NEWUSER)
    finally:
        for fd in ctx.ns_fds:
            os.close(fd)


def _await_turn(item: pytest.Item, fd: int) -> pytest.Item | None:
    """Wait, in the sandbox, until pytest starts this test; return the item after it.
    At EOF pytest has no use for this process (the test runs otherwise, or not at all)."""
    data = b""
    while len(data) < TURN.size:
        chunk = os.read(fd, TURN.size - len(data))
        if not chunk:
            os._exit(0)
        data += chunk
    os.close(fd)
    (index,) = TURN.unpack(data)
    return item.session.items[index] if index >= 0 else None


def run(item: pytest.Item, nextitem: pytest.Item | None, ctx: ChildContext) -> NoReturn:
    code = 0
    channel = Channel(ctx.report_fd)
    try:
        enter_sandbox(ctx)
        for fd in (ctx.init_pidfd, *ctx.close_fds):
            if fd >= 0:
                os.close(fd)
        if ctx.turn_fd >= 0:
            nextitem = _await_turn(item, ctx.turn_fd)
        faulthandler.register(DUMP_SIGNAL, file=ctx.dump_fd, all_threads=True, chain=False)
        global _current
        _current = channel
        integrations.child_starting(item)
        with _compat.warnings_captured(item):
            _compat.run_protocol(item, nextitem)
        integrations.child_finished(item)
        _flush()  # before DONE: pytest stops listening then, and prints what follows
        channel.send(wire.Kind.DONE, {})
    except pytest.exit.Exception as exc:
        channel.send(wire.Kind.EXIT, {"msg": exc.msg, "returncode": exc.returncode})
        code = 0
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        code = 70
        try:
            channel.send(wire.Kind.ERROR, {"traceback": traceback.format_exc()})
        except OSError:
            pass
    finally:
        _flush()
        os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - nothing more can be done at exit
            pass
