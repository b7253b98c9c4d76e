"""Starting a test process in a sandbox: the caps, its context, the fork into the
sandbox's pid namespace."""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence

import pytest

from .. import ffi, wire
from ..cgroups import Limits
from ..spec import IsolationSpec
from ..testprocess.context import ChildContext, conditions_for, namespaces_for
from .builder_client import Lease
from .forking import fork_quietly
from .session import Session

RUN_BEFORE = pytest.StashKey["tuple[int, ...]"]()
"""Items (indexes in ``session.items``) an item's test process runs before it, in order:
set by the flaky-test hunt for one attempt, read by ``run_isolated`` and ``run_forked``."""


def fork_into(lease: Lease, session: Session) -> int:
    """Fork the test process, born in the sandbox's pid namespace (as root); 0 in it."""
    if session.plan.userns == "first":
        # Rootless: pytest holds no capability to join the sandbox's pid namespace; the
        # test process enters it with the others, through one more fork (``testprocess.enter``).
        return os.fork()
    ffi.setns(lease.pidfd, ffi.CLONE_NEWPID)  # our next child is born in the sandbox
    # Objects that exist now are never traversed by the child's garbage collector: a
    # full collection would otherwise touch (and so copy) every page of the parent.
    gc.freeze()
    pid = -1
    try:
        pid = fork_quietly()
    finally:
        if pid != 0:
            gc.unfreeze()
            ffi.setns(session.own_pidns, ffi.CLONE_NEWPID)
    return pid


def context_for(
    lease: Lease,
    spec: IsolationSpec,
    session: Session,
    busy: Sequence[int] = (),
    turn: int = -1,
    before: tuple[int, ...] = (),
) -> tuple[int, int, ChildContext]:
    """Set the sandbox's caps; the report pipe and what the test process needs to enter.
    ``busy``: more descriptors of ours for it to close (the running test's); ``before``:
    items to run first in its process (``ChildContext.before``)."""
    join = lease.join_fds
    if lease.group is not None:
        limits = Limits(spec.cpu, spec.mem, spec.pids, spec.cpu_period)
        lease.group.set_limits(limits)
        needed = lease.group.needed_joins(limits)
        join = [fd for fd, keep in zip(lease.join_fds, needed, strict=True) if keep]
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    ctx = ChildContext(
        report_fd=wfd,
        report_key=wire.new_key().hex(),
        dump_fd=session.dump_fd,
        init_pid=lease.pid,
        init_pidfd=lease.pidfd,
        join_fds=tuple(join),
        hostname=spec.hostname,
        namespaces=namespaces_for(spec),
        cwd=os.getcwd(),
        close_fds=(
            rfd,
            session.own_pidns,
            *session.pool.fds,
            *(fd for fd in lease.join_fds if fd not in join),
            *busy,
        ),
        rootless=session.plan.userns == "first",
        userns=bool(session.plan.userns),
        mount_proc=not session.plan.init_builds,
        ns_fds=tuple(lease.ns_fds),
        turn_fd=turn,
        before=before,
        **conditions_for(spec),  # type: ignore[arg-type]
    )
    return rfd, wfd, ctx
