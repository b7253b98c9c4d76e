"""One isolated test's turn, in pytest's process: take its sandbox (and the process
forked ahead for it, if any), start the test process, fork the next test's meanwhile,
wait, kill the sandbox, read the usage, and turn whatever happened into reports.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import pytest

from .. import _compat, wire
from ..builder.namespaces import kill_sandbox
from ..cgroups import CgroupError, Usage
from ..reporting import Record
from ..spec import IsolationSpec
from ..testprocess import main as test_process
from .builder_client import Lease, PoolError
from .crashes import annotate, complete, error_reports, synthesize
from .launch import RUN_BEFORE, context_for, fork_into
from .outcome import Outcome
from .prefork import item_index
from .session import MAX_DYING, Session
from .spares import SpareWanted, give_turn
from .waiting import Run, collect_dump, reap, wait_for


def _share_with_item(reports: list[pytest.TestReport], item: pytest.Item) -> None:
    """Use the item's own strings in reports that came through the pipe.

    pytest keeps every report until the session ends. Reports made in this process share
    the item's nodeid, location and keyword names; decoded ones would hold copies of each
    (several KiB per test, over a whole session). Keyword names are interned instead.
    """
    for report in reports:
        _compat.share_node_id(report, item)
        if report.location == item.location:
            report.location = item.location
        # Interned: one copy of each keyword name for all reports (iterating the item's
        # own keywords walks its whole parent chain, for every test).
        report.keywords = {sys.intern(k): v for k, v in report.keywords.items()}


def _read_usage(lease: Lease) -> Usage:
    return lease.group.read_usage() if lease.group is not None else Usage()


def run_isolated(
    item: pytest.Item,
    nextitem: pytest.Item | None,
    spec: IsolationSpec,
    session: Session,
    upcoming: IsolationSpec | None = None,
) -> Outcome:
    """Run ``item`` in a sandbox. ``upcoming``: the spec of ``nextitem``, if its test
    process may be forked while this test runs (``prefork.upcoming``)."""
    before = item.stash.get(RUN_BEFORE, ())
    try:
        session.settle(keep=MAX_DYING)
        spare = session.take_spare(item)
        if spare is not None and before:
            session.discard(spare)  # forked to run its test alone
            spare = None
        after = -1 if nextitem is None else item_index(nextitem)
        if spare is not None and nextitem is not None and after < 0:
            session.discard(spare)  # it could not be told which item comes next
            spare = None
        lease = spare.lease if spare is not None else session.pool.acquire()
    except PoolError as exc:
        return Outcome(
            error_reports(item, f"pytest-isolate could not isolate this test: {exc}"), [], None
        )
    for problem in lease.problems:
        if problem not in session.warned:
            session.warned.add(problem)
            warnings.warn(
                pytest.PytestWarning(f"pytest-isolate: host mount not snapshotted: {problem}"),
                stacklevel=1,
            )
    os.ftruncate(session.dump_fd, 0)
    if spare is not None:
        rfd, key = spare.rfd, spare.key
        wall_start = time.monotonic()
        start = time.time()
        pid = spare.pid
        give_turn(spare, after)
    else:
        try:
            rfd, wfd, ctx = context_for(lease, spec, session, before=before)
        except CgroupError as exc:  # the kernel refused a cap that spec.py let through
            kill_sandbox(lease.pidfd)
            session.pool.release(lease)
            return Outcome(
                error_reports(item, f"pytest-isolate could not set this test's caps: {exc}"),
                [],
                None,
            )
        key = bytes.fromhex(ctx.report_key)
        wall_start = time.monotonic()
        start = time.time()
        pid = fork_into(lease, session)
        if pid == 0:  # pragma: no cover - the test process
            test_process.run(item, nextitem, ctx)
        os.close(wfd)
    meanwhile = None
    if upcoming is not None and nextitem is not None:
        meanwhile = SpareWanted(nextitem, upcoming, session, (rfd, *lease.fds))
        if meanwhile.attempt():
            meanwhile = None
    run = Run(pid, wire.Reader(key))
    dump = ""
    usage: Usage | None = None
    changes = None
    try:
        deadline = wall_start + spec.timeout if spec.timeout else None
        wait_for(run, item.config, rfd, deadline, meanwhile)
        if run.timed_out:
            dump = collect_dump(run.pid, session.dump_fd)
        if run.timed_out or run.garbage:
            kill_sandbox(lease.pidfd)
        if run.last:
            # It only has to exit now, which takes a while (its copy of our memory goes):
            # pytest goes on meanwhile, and reaps it before a later test (Session.settle).
            # The sandbox is killed below, with whatever the test left running.
            wall = time.monotonic() - wall_start
            usage = _read_usage(lease)
            session.exiting.append(pid)
        else:
            run.status = reap(pid)
    except BaseException:
        kill_sandbox(lease.pidfd)
        reap(pid)
        raise
    finally:
        os.close(rfd)
        kill_sandbox(lease.pidfd)
        if usage is None:
            wall = time.monotonic() - wall_start
            usage = _read_usage(lease)
        changes = session.pool.release(lease, diff=True)
    event = ""
    if complete(run, item.config):
        reports = run.reports
    else:
        reports, event = synthesize(item, run, spec, usage, dump, start)
    _share_with_item(reports, item)
    record = Record(item.nodeid, wall, usage, spec, event)
    annotate(reports, record, spec)
    return Outcome(reports, run.warnings, record, run.exit, run.prior, run.interrupt, changes)
