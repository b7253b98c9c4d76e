"""The fork server's loop: one request, one fork (runs in the fork server)."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Sequence
from typing import Any, NoReturn

import pytest

from .. import ffi
from ..testprocess import main as test_process
from ..testprocess.context import ChildContext
from .clone import fork_as_sibling
from .protocol import ANSWER, REQUEST


def serve(sock: socket.socket, items: Sequence[pytest.Item]) -> NoReturn:  # pragma: no cover
    """The server's loop: one request, one fork. Runs no test code itself, and as little
    of its own as it can: every page it writes while a test process shares it is copied."""
    on_interrupt = signal.getsignal(signal.SIGINT)  # pytest's, for the test processes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # pytest decides what Ctrl-C ends
    ffi.prctl(ffi.PR_SET_PDEATHSIG, signal.SIGKILL)
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    while True:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 64)
        if not data:
            os._exit(0)
        index, pidns, n_join, n_ns = REQUEST.unpack_from(data)
        pid = -1
        try:
            if pidns:
                ffi.setns(fds[1], ffi.CLONE_NEWPID)
            try:
                pid = fork_as_sibling()
            finally:
                if pid != 0 and pidns:
                    ffi.setns(own_pidns, ffi.CLONE_NEWPID)
        except OSError as exc:
            pid = -(exc.errno or 1)
        if pid == 0:
            signal.signal(signal.SIGINT, on_interrupt)
            ctx = ChildContext(
                report_fd=fds[0],
                init_pidfd=fds[1],
                turn_fd=fds[2],
                join_fds=tuple(fds[3 : 3 + n_join]),
                ns_fds=tuple(fds[3 + n_join : 3 + n_join + n_ns]),
                close_fds=(sock.fileno(), own_pidns),
                **_plain(json.loads(data[REQUEST.size :])),
            )
            test_process.run(items[index], None, ctx)
        for fd in fds:
            os.close(fd)
        sock.send(ANSWER.pack(pid))


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    """The context's plain fields as JSON gave them: its tuples came as lists."""
    for name in ("cpuset", "before"):
        value = fields.get(name)
        if isinstance(value, list):
            fields[name] = tuple(value)
    return fields
