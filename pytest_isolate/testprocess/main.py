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
from . import conditions
from .context import DUMP_SIGNAL, TURN, ChildContext
from .enter import enter_sandbox


class Channel:
    """The test process's end of the report pipe."""

    def __init__(self, fd: int, key: bytes = wire.MAGIC) -> None:
        self.fd = fd
        self.key = key
        self.prior = False
        """Reports are of an item run before the test (``ChildContext.before``)."""

    def send(self, kind: bytes, payload: object) -> None:
        if self.prior and kind == wire.Kind.REPORT:
            kind = wire.Kind.PRIOR
        elif self.prior:
            return  # only the outcomes of the items run before the test are wanted
        wire.send(self.fd, kind, payload, self.key)


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
    channel = Channel(ctx.report_fd, bytes.fromhex(ctx.report_key) or wire.MAGIC)
    try:
        enter_sandbox(ctx)
        for fd in (ctx.init_pidfd, *ctx.close_fds):
            if fd >= 0:
                os.close(fd)
        if ctx.turn_fd >= 0:
            nextitem = _await_turn(item, ctx.turn_fd)
        faulthandler.register(DUMP_SIGNAL, file=ctx.dump_fd, all_threads=True, chain=False)
        _apply_conditions(item, ctx)
        global _current
        _current = channel
        integrations.child_starting(item)
        if ctx.before:
            nextitem = _run_before(item, nextitem, ctx.before, channel)
        with _compat.warnings_captured(item):
            _compat.run_protocol(item, nextitem)
        integrations.child_finished(item)
        _flush()  # before DONE: pytest stops listening then, and prints what follows
        channel.send(wire.Kind.DONE, {})
    except pytest.exit.Exception as exc:
        channel.send(wire.Kind.EXIT, {"msg": exc.msg, "returncode": exc.returncode})
        code = 0
    except KeyboardInterrupt as exc:  # pytest's runner lets it through: the session ends
        channel.send(wire.Kind.INTERRUPT, {"where": _where(exc)})
        code = 128 + signal.SIGINT
    except conditions.ConditionError as exc:
        code = 70
        channel.send(wire.Kind.ERROR, {"traceback": "", "message": str(exc)})
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        code = 70
        try:
            channel.send(wire.Kind.ERROR, {"traceback": traceback.format_exc()})
        except OSError:
            pass
    finally:
        _flush()
        os._exit(code)


def _where(exc: BaseException) -> str:
    """`` (raised at PATH:LINE)``: the innermost frame of its traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" (raised at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _apply_conditions(item: pytest.Item, ctx: ChildContext) -> None:
    """The spec's conditions that take effect here (the clock's: on entering)."""
    if ctx.cpuset is not None:
        conditions.pin(tuple(ctx.cpuset))
    if ctx.noise:
        conditions.start_noise(ctx.noise)
    if ctx.seed is not None:
        conditions.seed(item, ctx.seed)


def _run_before(
    item: pytest.Item, nextitem: pytest.Item | None, before: tuple[int, ...], channel: Channel
) -> pytest.Item | None:
    """Run the items ``before`` (indexes in ``session.items``) here, in order, then leave
    the setup state ready for ``item``. Their reports go to pytest as PRIOR reports; what
    they leave behind (in this process, in the sandbox) is what ``item`` then sees."""
    items = item.session.items
    chain = [items[index] for index in before]
    channel.prior = True
    try:
        for prior, after in zip(chain, [*chain[1:], item], strict=True):
            _compat.teardown_for(prior)  # what pytest's process set up that it does not need
            with _compat.warnings_captured(prior):
                _compat.run_protocol(prior, after)
    finally:
        channel.prior = False
    return nextitem


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - nothing more can be done at exit
            pass
