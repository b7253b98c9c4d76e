"""Parent side of one isolated test: fork into the prepared sandbox, wait, read, reap,
account, and turn whatever happened into pytest reports.

The parent never blocks forever: the deadline, EOF on the pipe and the test
process's exit (a pidfd) all end the wait. A test process that dies without its
final report becomes a failed report that names why, in the phase it was in.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from . import _compat, _ffi, child, forkserver, wire
from .cgroups import CgroupError, Limits, Usage
from .forking import fork_quietly
from .forkserver import ForkServer
from .isolation import BuildPlan
from .pool import Lease, PoolError, SandboxPool
from .prefork import item_index
from .reporting import Record, describe_exit, format_seconds, oom_text, pids_text
from .sandbox.namespaces import kill_sandbox
from .spec import IsolationSpec

PHASES = ("setup", "call", "teardown")
# How long a test process gets to write its stacks after the dump signal.
DUMP_GRACE = 1.0
# Killed sandboxes the builder may still be tearing down when the next test starts. The
# builder runs at idle priority: waiting on it here would stall pytest behind a build.
MAX_DYING = 8


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
                _reap(pid)
            elif os.waitpid(pid, os.WNOHANG)[0] == 0:
                still.append(pid)
        self.exiting = still
        self.pool.settle(keep)

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
        if self.forker is None and forkserver.supported():
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


def stray_test_processes(builder: int) -> list[int]:
    """Our children that live in a sandbox: in the pid namespace of one of the builder's
    children (the sandboxes' inits).

    Normally each test process is reaped where it was forked. One that a KeyboardInterrupt
    separated from its bookkeeping (between the fork and the wait) would keep its
    sandbox's init from ever finishing its exit, and so the builder, and pytest, from
    ending.
    """
    own = _pid_namespace(os.getpid())
    # Not ours: a rootless builder's helper, forking an init, lives in it for a moment.
    sandboxes = {_pid_namespace(init) for init in _children(builder)} - {-1, own}
    return [pid for pid in _children(os.getpid()) if _pid_namespace(pid) in sandboxes]


@dataclass
class Spare:
    """The test process of the next test, forked while the current test runs.

    It enters its sandbox at once, then waits for its turn on ``turn`` (``child.TURN``).
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


@dataclass
class Outcome:
    reports: list[pytest.TestReport]
    warnings: list[dict[str, Any]]
    record: Record | None
    exit: dict[str, Any] | None = None


@dataclass
class _Run:
    pid: int
    reader: wire.Reader = field(default_factory=wire.Reader)
    reports: list[pytest.TestReport] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    exit: dict[str, Any] | None = None
    error: str = ""
    garbage: str = ""
    status: int | None = None
    timed_out: bool = False


def _fork_into(lease: Lease, session: Session) -> int:
    if session.plan.userns == "first":
        # Rootless: pytest holds no capability to join the sandbox's pid namespace; the
        # test process enters it with the others, through one more fork (child.py).
        return os.fork()
    _ffi.setns(lease.pidfd, _ffi.CLONE_NEWPID)  # our next child is born in the sandbox
    # Objects that exist now are never traversed by the child's garbage collector: a
    # full collection would otherwise touch (and so copy) every page of the parent.
    gc.freeze()
    pid = -1
    try:
        pid = fork_quietly()
    finally:
        if pid != 0:
            gc.unfreeze()
            _ffi.setns(session.own_pidns, _ffi.CLONE_NEWPID)
    return pid


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


def _restore_tuples(data: dict[str, Any]) -> dict[str, Any]:
    """JSON has no tuples; pytest's report fields that are tuples become lists on the wire."""
    if isinstance(data.get("location"), list):
        data["location"] = tuple(data["location"])
    if isinstance(data.get("longrepr"), list):
        data["longrepr"] = tuple(data["longrepr"])  # (path, lineno, reason) of a skip
    for key in ("sections", "user_properties"):
        if isinstance(data.get(key), list):
            data[key] = [tuple(x) if isinstance(x, list) else x for x in data[key]]
    return data


def _handle(run: _Run, config: pytest.Config, kind: bytes, payload: Any) -> None:
    if kind == wire.Kind.REPORT:
        data = _restore_tuples(payload)
        report = config.hook.pytest_report_from_serializable(config=config, data=data)
        run.reports.append(report)
    elif kind == wire.Kind.WARNING:
        run.warnings.append(payload)
    elif kind == wire.Kind.DONE:
        run.done = True
    elif kind == wire.Kind.EXIT:
        run.exit = payload
    elif kind == wire.Kind.ERROR:
        run.error = payload["traceback"]


def _read(run: _Run, config: pytest.Config, rfd: int) -> bool:
    """Take in what is on the pipe; True at EOF. Bytes that are not a frame end the
    reading (``run.garbage``), after the whole frames before them are taken in."""
    try:
        messages, eof = wire.drain(rfd, run.reader)
    except wire.WireError as exc:
        messages, eof = exc.messages, True
        run.garbage = str(exc)
    for kind, payload in messages:
        _handle(run, config, kind, payload)
    return eof


def _wait(
    run: _Run,
    config: pytest.Config,
    rfd: int,
    deadline: float | None,
    meanwhile: _SpareWanted | None = None,
) -> None:
    """Read the test process's reports until its last, its exit, or the deadline.
    ``meanwhile``: a spare to fork as soon as the builder has a sandbox ready."""
    pidfd = os.pidfd_open(run.pid)
    os.set_blocking(rfd, False)
    poller = select.poll()
    poller.register(rfd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    pool = -1
    if meanwhile is not None:
        meanwhile = replace(meanwhile, busy=(*meanwhile.busy, pidfd))
        pool = meanwhile.session.pool.fileno()
        poller.register(pool, select.POLLIN)
    reading = True
    try:
        while True:
            timeout = None
            if deadline is not None:
                timeout = max(0, int((deadline - time.monotonic()) * 1000) + 1)
            events = poller.poll(timeout)
            if not events and deadline is not None and time.monotonic() >= deadline:
                run.timed_out = True
                return
            exited = False
            for fd, _ in events:
                if fd == pidfd:
                    exited = True
                elif fd == pool:
                    if meanwhile is not None and meanwhile.attempt():
                        poller.unregister(pool)
                        meanwhile = None
                elif reading:
                    eof = _read(run, config, rfd)
                    if run.garbage or run.done or run.exit is not None:
                        # After the last message the test process only has to exit, and
                        # its exit (freeing its copy of our memory) need not delay us.
                        return
                    if eof:
                        reading = False
                        poller.unregister(rfd)
            if exited:
                if reading:
                    _read(run, config, rfd)
                return
    finally:
        os.close(pidfd)


def _collect_dump(run: _Run, session: Session) -> str:
    try:
        os.kill(run.pid, child.DUMP_SIGNAL)
    except ProcessLookupError:
        return ""
    end = time.monotonic() + DUMP_GRACE
    size = -1
    while time.monotonic() < end:
        time.sleep(0.05)
        now = os.fstat(session.dump_fd).st_size
        if now == size and now > 0:
            break
        size = now
    return os.pread(session.dump_fd, 1 << 22, 0).decode(errors="replace")


def _read_usage(lease: Lease) -> Usage:
    return lease.group.read_usage() if lease.group is not None else Usage()


def _reap(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def _report(
    item: pytest.Item,
    when: str,
    outcome: str,
    longrepr: str | None,
    sections: list[tuple[str, str]] | None = None,
    start: float = 0.0,
    stop: float = 0.0,
) -> pytest.TestReport:
    return pytest.TestReport(
        nodeid=item.nodeid,
        location=item.location,
        keywords={k: 1 for k in item.keywords},
        outcome=outcome,  # type: ignore[arg-type]
        longrepr=longrepr,
        when=when,  # type: ignore[arg-type]
        sections=sections or [],
        duration=stop - start,
        start=start,
        stop=stop,
        user_properties=list(item.user_properties),
    )


def error_reports(item: pytest.Item, message: str) -> list[pytest.TestReport]:
    """A test that could not be run at all: an error in setup, with this message."""
    now = time.time()
    return [
        _report(item, "setup", "failed", message, start=now, stop=now),
        _report(item, "teardown", "passed", None, start=now, stop=now),
    ]


def _crash_phase(run: _Run, config: pytest.Config) -> str:
    """The phase a test process that died was in: the one after its last report, as
    pytest's runner goes on (no call after a setup that did not pass, or with
    --setup-only). Each report is sent as its phase ends, so nothing else is needed."""
    if not run.reports:
        return "setup"
    last = run.reports[-1]
    if last.when == "setup" and last.passed and not config.getoption("setuponly", False):
        return "call"
    return "teardown"


def _synthesize(
    item: pytest.Item, run: _Run, spec: IsolationSpec, usage: Usage, dump: str, start: float
) -> tuple[list[pytest.TestReport], str]:
    phase = _crash_phase(run, item.config)
    event = "crash"
    if run.timed_out:
        event = "timeout"
        text = f"Timeout: the test ran past its timeout of {format_seconds(spec.timeout or 0)}; "
        text += f"the sandbox was killed during {phase}.\n\n"
        text += f"timeout after {format_seconds(spec.timeout or 0)}"
        text += (
            f"\n\nPython stack of every thread at the deadline:\n{dump}"
            if dump.strip()
            else "\n\n(no stack: the test process did not answer the dump signal)"
        )
    elif usage.oom_kills and run.status is not None and os.WIFSIGNALED(run.status):
        event = "oom"
        text = f"The isolated test was killed during {phase}: {oom_text(spec, usage)}."
    elif run.garbage:
        text = (
            f"The isolated test process wrote something that is not a report to the report "
            f"pipe during {phase} ({run.garbage}); the sandbox was killed."
        )
    elif run.error:
        text = f"pytest-isolate failed inside the test process during {phase}:\n{run.error}"
    else:
        text = f"The isolated test process {describe_exit(run.status)} during {phase}"
        text += " without reporting its result."
        if run.reader.partial:
            text += " It died in the middle of sending a message to pytest."
        elif run.status is not None and os.WIFEXITED(run.status):
            text += " (os._exit(), or it closed its report pipe.)"
    if usage.pids_limit_hits:
        text += f"\n{pids_text(spec, usage)}."
    out, err = _compat.read_captured(item.config)
    sections = [
        (f"Captured {name} {phase}", value)
        for name, value in (("stdout", out), ("stderr", err))
        if value
    ]
    now = time.time()
    reports = [
        r for r in run.reports if r.when != phase and PHASES.index(r.when) < PHASES.index(phase)
    ]
    reports.append(_report(item, phase, "failed", text, sections, start, now))
    if phase != "teardown":
        reports.append(_report(item, "teardown", "passed", None, start=now, stop=now))
    return reports, event


def _annotate(reports: list[pytest.TestReport], record: Record, spec: IsolationSpec) -> None:
    usage = record.usage
    notes = []
    if usage.pids_limit_hits and record.event != "crash":
        notes.append(pids_text(spec, usage))
    if usage.oom_kills and record.event != "oom":
        notes.append(
            f"{usage.oom_kills} process(es) of the test were killed: {oom_text(spec, usage)}"
        )
    properties = record.properties()
    for report in reports:
        report.user_properties = [*report.user_properties, *properties]
    if notes and reports:
        target = next((r for r in reports if r.failed), reports[-1])
        target.sections.append(("isolation", "\n".join(notes)))


def _context(
    lease: Lease, spec: IsolationSpec, session: Session, busy: Sequence[int] = (), turn: int = -1
) -> tuple[int, int, child.ChildContext]:
    """Set the sandbox's caps; the report pipe and what the test process needs to enter.
    ``busy``: more descriptors of ours for it to close (the running test's)."""
    join = lease.join_fds
    if lease.group is not None:
        limits = Limits(spec.cpu, spec.mem, spec.pids)
        lease.group.set_limits(limits)
        needed = lease.group.needed_joins(limits)
        join = [fd for fd, keep in zip(lease.join_fds, needed, strict=True) if keep]
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    ctx = child.ChildContext(
        report_fd=wfd,
        dump_fd=session.dump_fd,
        init_pid=lease.pid,
        init_pidfd=lease.pidfd,
        join_fds=tuple(join),
        hostname=spec.hostname,
        namespaces=child.namespaces_for(spec),
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
    )
    return rfd, wfd, ctx


@dataclass
class _SpareWanted:
    """The next test's process, to fork as soon as a sandbox is ready for it."""

    item: pytest.Item
    spec: IsolationSpec
    session: Session
    busy: tuple[int, ...]
    """Descriptors of the running test, for the spare to close."""

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
        rfd, wfd, ctx = _context(lease, spec, session, (*busy, turn_w), turn_r)
        opened += [rfd, wfd]
        pid = -1
        if server is not None:
            try:
                pid = server.fork(item_index(item), ctx, session.plan.userns != "first")
            except OSError:  # it died (or could not fork): fork here, and start another
                session.stop_fork_server()
        if pid == -1:
            pid = _fork_into(lease, session)
    except OSError:  # a cap that cannot be set (CgroupError), no memory for a fork, ...
        for fd in opened:
            os.close(fd)
        session.pool.release(lease)
        return None
    if pid == 0:  # pragma: no cover - the test process; the next item comes with its turn
        child.run(item, None, ctx)
    os.close(wfd)
    os.close(turn_r)
    return Spare(item, pid, lease, rfd, turn_w, _compat.fixture_runs(item.config))


def _give_turn(spare: Spare, index: int) -> None:
    """Start it; ``index``: the next item's in ``session.items`` (-1: none)."""
    try:
        os.write(spare.turn, child.TURN.pack(index))
    except BrokenPipeError:
        pass  # it died waiting: its exit status tells, as for any test process
    finally:
        os.close(spare.turn)


def run_isolated(
    item: pytest.Item,
    nextitem: pytest.Item | None,
    spec: IsolationSpec,
    session: Session,
    upcoming: IsolationSpec | None = None,
) -> Outcome:
    """Run ``item`` in a sandbox. ``upcoming``: the spec of ``nextitem``, if its test
    process may be forked while this test runs (``prefork.upcoming``)."""
    try:
        session.settle(keep=MAX_DYING)
        spare = session.take_spare(item)
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
        rfd = spare.rfd
        wall_start = time.monotonic()
        start = time.time()
        pid = spare.pid
        _give_turn(spare, after)
    else:
        try:
            rfd, wfd, ctx = _context(lease, spec, session)
        except CgroupError as exc:  # the kernel refused a cap that spec.py let through
            kill_sandbox(lease.pidfd)
            session.pool.release(lease)
            return Outcome(
                error_reports(item, f"pytest-isolate could not set this test's caps: {exc}"),
                [],
                None,
            )
        wall_start = time.monotonic()
        start = time.time()
        pid = _fork_into(lease, session)
        if pid == 0:  # pragma: no cover - the test process
            child.run(item, nextitem, ctx)
        os.close(wfd)
    meanwhile = None
    if upcoming is not None and nextitem is not None:
        meanwhile = _SpareWanted(nextitem, upcoming, session, (rfd, *lease.fds))
        if meanwhile.attempt():
            meanwhile = None
    run = _Run(pid)
    dump = ""
    usage: Usage | None = None
    try:
        deadline = wall_start + spec.timeout if spec.timeout else None
        _wait(run, item.config, rfd, deadline, meanwhile)
        if run.timed_out:
            dump = _collect_dump(run, session)
        if run.timed_out or run.garbage:
            kill_sandbox(lease.pidfd)
        if run.done or run.exit is not None:
            # It only has to exit now, which takes a while (its copy of our memory goes):
            # pytest goes on meanwhile, and reaps it before a later test (Session.settle).
            # The sandbox is killed below, with whatever the test left running.
            wall = time.monotonic() - wall_start
            usage = _read_usage(lease)
            session.exiting.append(pid)
        else:
            run.status = _reap(pid)
    except BaseException:
        kill_sandbox(lease.pidfd)
        _reap(pid)
        raise
    finally:
        os.close(rfd)
        kill_sandbox(lease.pidfd)
        if usage is None:
            wall = time.monotonic() - wall_start
            usage = _read_usage(lease)
        session.pool.release(lease)
    event = ""
    if run.done and not run.garbage:
        reports = run.reports
    elif run.exit is not None:
        reports = run.reports
    else:
        reports, event = _synthesize(item, run, spec, usage, dump, start)
    _share_with_item(reports, item)
    record = Record(item.nodeid, wall, usage, spec, event)
    _annotate(reports, record, spec)
    return Outcome(reports, run.warnings, record, run.exit)
