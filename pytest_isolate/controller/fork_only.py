"""Fork-only isolation: the test runs in a forked child of pytest, without a sandbox.

Used where no namespace can be created (``unshare`` refused by a seccomp filter, as in
Docker's default profile; no user namespaces for an unprivileged user; macOS). A crash,
``os._exit`` or a timeout still become reports, and everything in the test's process
group is killed when it ends; but there are no namespaces, no snapshot and no caps, so
a daemon that leaves the process group (``setsid``) outlives the test.
"""

from __future__ import annotations

import os
import select
import signal
import tempfile
import time

import pytest

from .. import wire
from ..cgroups import Usage
from ..reporting import Record
from ..spec import IsolationSpec
from ..testprocess import main as test_process
from ..testprocess.context import ChildContext, conditions_for
from .crashes import annotate, complete, synthesize
from .launch import RUN_BEFORE
from .outcome import Outcome
from .waiting import Run, collect_dump, read_into, reap


def _killpg(pid: int) -> None:
    """The test process and its process group (which it makes first thing, ``setsid``)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_for(run: Run, config: pytest.Config, rfd: int, deadline: float | None) -> None:
    os.set_blocking(rfd, False)
    poller = select.poll()
    poller.register(rfd, select.POLLIN)
    while True:
        timeout = None
        if deadline is not None:
            timeout = max(0, int((deadline - time.monotonic()) * 1000) + 1)
        events = poller.poll(timeout)
        if not events and deadline is not None and time.monotonic() >= deadline:
            run.timed_out = True
            return
        eof = read_into(run, config, rfd)
        if eof or run.garbage or run.last:
            return


def run_forked(item: pytest.Item, nextitem: pytest.Item | None, spec: IsolationSpec) -> Outcome:
    with tempfile.TemporaryFile(prefix="pytest-isolate-stacks-") as dump_file:
        dump_fd = dump_file.fileno()
        rfd, wfd = os.pipe()
        key = wire.new_key()
        ctx = ChildContext(
            report_fd=wfd,
            report_key=key.hex(),
            dump_fd=dump_fd,
            init_pid=0,
            init_pidfd=-1,
            join_fds=(),
            hostname=spec.hostname,
            cwd=os.getcwd(),
            close_fds=(rfd,),
            sandboxed=False,
            before=item.stash.get(RUN_BEFORE, ()),
            **conditions_for(spec),  # type: ignore[arg-type]
        )
        wall_start = time.monotonic()
        start = time.time()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the test process
            test_process.run(item, nextitem, ctx)
        os.close(wfd)
        run = Run(pid, wire.Reader(key))
        dump = ""
        try:
            wait_for(run, item.config, rfd, wall_start + spec.timeout if spec.timeout else None)
            if run.timed_out:
                dump = collect_dump(pid, dump_fd)
        finally:
            os.close(rfd)
            _killpg(pid)  # the test and whatever it started in its process group
            run.status = reap(pid)
        wall = time.monotonic() - wall_start
    usage = Usage()
    event = ""
    if complete(run, item.config):
        reports = run.reports
    else:
        reports, event = synthesize(item, run, spec, usage, dump, start)
    record = Record(item.nodeid, wall, usage, spec, event)
    annotate(reports, record, spec)
    return Outcome(reports, run.warnings, record, run.exit, run.prior, run.interrupt)
