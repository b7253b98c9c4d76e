"""The test process: join the prepared sandbox, run one item's protocol, send the reports.

Runs in the child of ``os.fork()`` (pid 2 of the sandbox's pid namespace) and
never returns: it leaves with ``os._exit`` so that no atexit handler, buffered
output or finalizer of the parent runs twice.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import traceback
from typing import NoReturn

import pytest

from .. import _compat, integrations, wire
from .context import DUMP_SIGNAL, TURN, ChildContext
from .enter import enter_sandbox


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
