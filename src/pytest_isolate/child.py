"""The test process: join the prepared sandbox, run one item's protocol, send the reports.

Runs in the child of ``os.fork()`` (pid 2 of the sandbox's pid namespace) and
never returns: it leaves with ``os._exit`` so that no atexit handler, buffered
output or finalizer of the parent runs twice.
"""

from __future__ import annotations

import errno
import faulthandler
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import NoReturn

import pytest

from . import _compat, _ffi, integrations, wire
from .sandbox.namespaces import SANDBOX_NAMESPACES, set_hostname
from .spec import IsolationSpec

# Sent by the parent at the deadline: every thread's Python stack goes to the dump file.
DUMP_SIGNAL = signal.SIGRTMIN + 10

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
    namespaces: int = SANDBOX_NAMESPACES
    """The sandbox's namespaces this test joins (all but net with ``net="host"``)."""


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


def enter_sandbox(ctx: ChildContext) -> None:
    # cgroups first: migration is checked against our credentials, which the user
    # namespace is about to reduce. (The builder opened the files for us.)
    for fd in ctx.join_fds:
        os.write(fd, b"0")
        os.close(fd)
    _setns_all(ctx, ctx.namespaces)
    set_hostname(ctx.hostname)
    _setns_all(ctx, _ffi.CLONE_NEWUSER)
    # Changing credentials cleared both; the test is an ordinary process again.
    _ffi.prctl(_ffi.PR_SET_PDEATHSIG, signal.SIGKILL)
    _ffi.prctl(_ffi.PR_SET_DUMPABLE, 1)
    # As in bubblewrap: exec never grants privileges again (setuid bits, file capabilities).
    _ffi.prctl(_ffi.PR_SET_NO_NEW_PRIVS, 1)
    try:
        os.chdir(ctx.cwd)
    except OSError:
        os.chdir("/")


def run(item: pytest.Item, nextitem: pytest.Item | None, ctx: ChildContext) -> NoReturn:
    code = 0
    channel = Channel(ctx.report_fd)
    try:
        enter_sandbox(ctx)
        for fd in (ctx.init_pidfd, *ctx.close_fds):
            os.close(fd)
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
