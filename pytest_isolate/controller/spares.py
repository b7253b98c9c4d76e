"""The next test's process, forked while the current test runs (``session.Spare``).

It is forked as soon as the builder has a sandbox ready (from the fork server where
there is one), enters its sandbox, and waits there for its turn (``give_turn``), so
that the next test starts without waiting for a fork.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest

from .. import _compat
from ..spec import IsolationSpec
from ..testprocess import main as test_process
from ..testprocess.context import TURN
from .builder_client import Lease, PoolError
from .launch import context_for, fork_into
from .prefork import item_index
from .session import Session, Spare


@dataclass(frozen=True)
class SpareWanted:
    """The next test's process, to fork as soon as a sandbox is ready for it."""

    item: pytest.Item
    spec: IsolationSpec
    session: Session
    busy: tuple[int, ...]
    """Descriptors of the running test, for the spare to close."""

    def fileno(self) -> int:
        """Readable when the builder has sent something (a sandbox may be ready)."""
        return self.session.pool.fileno()

    def also_close(self, fd: int) -> SpareWanted:
        return replace(self, busy=(*self.busy, fd))

    def attempt(self) -> bool:
        """Fork it if the builder has a sandbox ready; True once there is nothing left to
        do (forked, or the builder failed: then the next test forks at its turn)."""
        try:
            lease = self.session.pool.take_ready()
        except PoolError:
            return True
        if lease is None:
            return False
        self.session.spare = _fork_spare(self.item, self.spec, self.session, self.busy, lease)
        return True


def _fork_spare(
    item: pytest.Item, spec: IsolationSpec, session: Session, busy: Sequence[int], lease: Lease
) -> Spare | None:
    """Fork ``item``'s test process into ``lease``'s sandbox, to wait there for its turn.
    None if that fails: then it is forked at its turn, which reports what goes wrong."""
    _ = item.location  # cached on the item: no test process works it out again
    opened: list[int] = []
    try:
        server = session.fork_server(item, (*busy, *lease.fds))
        turn_r, turn_w = os.pipe2(os.O_CLOEXEC)
        opened += [turn_r, turn_w]
        rfd, wfd, ctx = context_for(lease, spec, session, (*busy, turn_w), turn_r)
        opened += [rfd, wfd]
        pid = -1
        if server is not None:
            try:
                pid = server.fork(item_index(item), ctx, session.plan.userns != "first")
            except OSError:  # it died (or could not fork): fork here, and start another
                session.stop_fork_server()
        if pid == -1:
            pid = fork_into(lease, session)
    except OSError:  # a cap that cannot be set (CgroupError), no memory for a fork, ...
        for fd in opened:
            os.close(fd)
        session.pool.release(lease)
        return None
    if pid == 0:  # pragma: no cover - the test process; the next item comes with its turn
        test_process.run(item, None, ctx)
    os.close(wfd)
    os.close(turn_r)
    key = bytes.fromhex(ctx.report_key)
    return Spare(item, pid, lease, rfd, turn_w, _compat.fixture_runs(item.config), key)


def give_turn(spare: Spare, index: int) -> None:
    """Start it; ``index``: the next item's in ``session.items`` (-1: none)."""
    try:
        os.write(spare.turn, TURN.pack(index))
    except BrokenPipeError:
        pass  # it died waiting: its exit status tells, as for any test process
    finally:
        os.close(spare.turn)
