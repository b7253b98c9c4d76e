"""The controller's per-session state in pytest's process: the builder's client, the fork
server, the test process forked ahead, and the test processes still exiting.

``settle`` is where pytest waits: before a test that runs in pytest's own process and
at the end of the session, until every used sandbox is gone.
"""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from .. import _compat
from ..builder.namespaces import kill_sandbox
from ..builder.plan import BuildPlan
from ..forkserver import clone
from .builder_client import Lease, SandboxPool
from .forkserver_client import ForkServer
from .waiting import reap

# Killed sandboxes the builder may still be tearing down when the next test starts. The
# builder runs at idle priority: waiting on it here would stall pytest behind a build.
MAX_DYING = 8


@dataclass
class Spare:
    """The test process of the next test, forked while the current test runs.

    It enters its sandbox at once, then waits for its turn on ``turn`` (``TURN``).
    So the next test starts without a fork, and the fork, the process's start and its
    entry into the sandbox overlap the current test instead. Its copy of pytest's process
    is the one a fork at its turn would make, provided pytest runs no fixture code in
    between (``fixture_runs``) and nothing else the test could see changes
    (``prefork.upcoming`` decides where that holds).
    """

    item: pytest.Item
    pid: int
    lease: Lease
    rfd: int
    turn: int
    fixture_runs: int
    key: bytes
    """Its report channel's key (``wire.new_key``)."""


@dataclass
class Session:
    """Per-pytest-process state of the controller."""

    pool: SandboxPool
    own_pidns: int
    dump_fd: int
    plan: BuildPlan = field(default_factory=BuildPlan)
    warned: set[str] = field(default_factory=set)
    exiting: list[int] = field(default_factory=list)
    """Test processes that reported everything and were killed with their sandbox."""
    spare: Spare | None = None
    """The next test's process, forked while the current test runs."""
    forker: ForkServer | None = None
    """Where spares are forked (``forkserver``); None until the first, or unsupported."""

    def take_spare(self, item: pytest.Item) -> Spare | None:
        """The process forked ahead for ``item``, if it is still of use: pytest's process
        has run no fixture code since. Any other is discarded."""
        spare, runs = self.spare, _compat.fixture_runs(item.config)
        if spare is not None and spare.item is item and spare.fixture_runs == runs:
            self.spare = None
            return spare
        self._drop_spare()
        return None

    def _drop_spare(self) -> None:
        spare, self.spare = self.spare, None
        if spare is not None:
            self.discard(spare)

    def discard(self, spare: Spare) -> None:
        """A spare that will not run: it leaves at EOF on its turn pipe, or with its sandbox."""
        os.close(spare.turn)
        os.close(spare.rfd)
        kill_sandbox(spare.lease.pidfd)
        self.pool.release(spare.lease)
        self.exiting.append(spare.pid)

    def settle(self, keep: int = 0) -> None:
        """Reap finished test processes; wait until at most ``keep`` sandboxes are dying.

        A sandbox's init exits only after every process of its namespace has been reaped,
        and the test process is our child: it must be reaped first. With ``keep=0`` a
        spare goes too: every sandbox is gone then; and so does the fork server (a test
        about to run in pytest's process may change what it holds a copy of).
        """
        if keep == 0:
            self._drop_spare()
            self.stop_fork_server()
        still = []
        for index, pid in enumerate(self.exiting):
            if index < len(self.exiting) - keep:
                reap(pid)
            elif os.waitpid(pid, os.WNOHANG)[0] == 0:
                still.append(pid)
        self.exiting = still
        if self.pool.dying() > keep:
            self._reap_strays()
        self.pool.settle(keep)

    def _reap_strays(self) -> None:
        """Kill and reap our children in a sandbox that are no test process of ours.

        A test's ``clone(CLONE_PARENT)`` makes its child pytest's (the test process's parent)
        in the test's sandbox. Its sandbox is killed at the end of the test, but its init
        cannot finish exiting, nor the builder tear the sandbox down, until we reap it.
        """
        known = {*self.exiting, *([self.spare.pid] if self.spare is not None else [])}
        for pid in stray_test_processes(self.pool.pid):
            if pid not in known:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                reap(pid)

    @classmethod
    def start(cls, plan: BuildPlan | None = None, shares: Sequence[str] = ()) -> Session:
        plan = plan or BuildPlan()
        pool = SandboxPool(plan, shares)
        own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        dump = os.memfd_create("pytest-isolate-stacks", os.MFD_CLOEXEC)
        return cls(pool, own, dump, plan)

    def fork_server(self, item: pytest.Item, busy: Sequence[int]) -> ForkServer | None:
        """The fork server, started or replaced if pytest's process ran fixture code since
        it started; None where there is none. ``busy``: descriptors it must not keep."""
        runs = _compat.fixture_runs(item.config)
        if self.forker is not None and self.forker.fixture_runs != runs:
            self.stop_fork_server()
        if self.forker is None and clone.supported():
            close = [*self.pool.fds, *busy, self.own_pidns]
            self.forker = ForkServer.start(item.session.items, close, runs)
        return self.forker

    def stop_fork_server(self) -> None:
        forker, self.forker = self.forker, None
        if forker is not None:
            forker.stop()

    def end(self) -> None:
        """The session is over: every sandbox gone, with any test process of ours still in
        one (only an interrupt, which ends the session, can leave one behind)."""
        for pid in stray_test_processes(self.pool.pid):
            if pid not in self.exiting:
                os.kill(pid, signal.SIGKILL)
                self.exiting.append(pid)
        self.settle()

    def close(self) -> None:
        self.end()
        self.pool.close()
        os.close(self.own_pidns)
        os.close(self.dump_fd)


def _children(pid: int) -> list[int]:
    found = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(child) for child in f.read().split()]
        except OSError:  # no CONFIG_PROC_CHILDREN, or the thread is gone
            pass
    return found


def _pid_namespace(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:  # gone
        return -1


# ioctl on a namespace file: the parent namespace, as a new file descriptor.
NS_GET_PARENT = 0xB702


def _pid_namespaces(pid: int) -> set[int]:
    """The pid namespace of ``pid`` and those above it, as far as we may see them."""
    try:
        fd = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # gone
        return set()
    found = set()
    try:
        while True:
            found.add(os.fstat(fd).st_ino)
            try:
                parent = fcntl.ioctl(fd, NS_GET_PARENT)
            except OSError:  # the top, or a namespace above our own (EPERM)
                return found
            os.close(fd)
            fd = parent
    finally:
        os.close(fd)


def stray_test_processes(builder: int) -> list[int]:
    """Our children that live in a sandbox: in the pid namespace of one of the builder's
    children (the sandboxes' inits), or below it.

    Normally each test process is reaped where it was forked. One that a KeyboardInterrupt
    separated from its bookkeeping (between the fork and the wait) would keep its
    sandbox's init from ever finishing its exit, and so the builder, and pytest, from
    ending.
    """
    own = _pid_namespace(os.getpid())
    # Not ours: a rootless builder's helper, forking an init, lives in it for a moment.
    sandboxes = {_pid_namespace(init) for init in _children(builder)} - {-1, own}
    # In a sandbox's namespace, or one nested in it (clone(CLONE_PARENT | CLONE_NEWPID)).
    return [pid for pid in _children(os.getpid()) if _pid_namespaces(pid) & sandboxes]
