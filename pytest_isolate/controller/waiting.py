"""Waiting for a test process in pytest's process: read its reports and warnings off the
pipe until its last message, its exit (a pidfd) or the deadline; collect its stacks at
the deadline; reap it.

The parent never blocks forever: the deadline, EOF on the pipe and the test process's
exit all end the wait. Bytes that are not a frame end the reading (``Run.garbage``).
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from .. import wire
from ..testprocess.context import DUMP_SIGNAL

# How long a test process gets to write its stacks after the dump signal.
DUMP_GRACE = 1.0


class Meanwhile(Protocol):
    """Work to do while waiting, when ``fileno`` is readable (``spares.SpareWanted``)."""

    def fileno(self) -> int: ...

    def attempt(self) -> bool:
        """Do it if it can be done now; True once there is nothing left to do."""
        ...

    def also_close(self, fd: int) -> Meanwhile:
        """The same work, with one more descriptor of ours for its process to close."""
        ...


@dataclass
class Run:
    """What pytest's process knows of one test process while it reads its pipe."""

    pid: int
    reader: wire.Reader = field(default_factory=wire.Reader)
    reports: list[pytest.TestReport] = field(default_factory=list)
    prior: list[pytest.TestReport] = field(default_factory=list)
    """Reports of the items it ran before its test (``ChildContext.before``)."""
    warnings: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    exit: dict[str, Any] | None = None
    interrupt: str | None = None
    """Where a KeyboardInterrupt ended the test's protocol (``Outcome.interrupt``)."""
    error: str = ""
    """A traceback of pytest-isolate's own, from the test process."""
    refused: str = ""
    """Why the test process could not run the test as its spec asks."""
    garbage: str = ""
    too_large: int = 0
    """The size of a message larger than the pipe takes (``wire.MAX_PAYLOAD``)."""
    status: int | None = None
    timed_out: bool = False

    @property
    def last(self) -> bool:
        """Whether its last message came: after it, it only has to exit."""
        return self.done or self.exit is not None or self.interrupt is not None


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


def _handle(run: Run, config: pytest.Config, kind: bytes, payload: Any) -> None:
    if kind in (wire.Kind.REPORT, wire.Kind.PRIOR):
        data = _restore_tuples(payload)
        report = config.hook.pytest_report_from_serializable(config=config, data=data)
        (run.reports if kind == wire.Kind.REPORT else run.prior).append(report)
    elif kind == wire.Kind.WARNING:
        run.warnings.append(payload)
    elif kind == wire.Kind.DONE:
        run.done = True
    elif kind == wire.Kind.EXIT:
        run.exit = payload
    elif kind == wire.Kind.INTERRUPT:
        run.interrupt = str(payload.get("where", ""))
    elif kind == wire.Kind.ERROR:
        run.error = payload["traceback"]
        run.refused = payload.get("message", "")


def read_into(run: Run, config: pytest.Config, rfd: int) -> bool:
    """Take in what is on the pipe; True at EOF. Bytes that are not a frame end the
    reading (``run.garbage``), after the whole frames before them are taken in."""
    try:
        messages, eof = wire.drain(rfd, run.reader)
    except wire.WireError as exc:
        messages, eof = exc.messages, True
        run.garbage = str(exc)
        if isinstance(exc, wire.FrameTooLargeError):
            run.too_large = exc.length
    for kind, payload in messages:
        _handle(run, config, kind, payload)
    return eof


def wait_for(
    run: Run,
    config: pytest.Config,
    rfd: int,
    deadline: float | None,
    meanwhile: Meanwhile | None = None,
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
        meanwhile = meanwhile.also_close(pidfd)
        pool = meanwhile.fileno()
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
                    eof = read_into(run, config, rfd)
                    if run.garbage or run.last:
                        # After the last message the test process only has to exit, and
                        # its exit (freeing its copy of our memory) need not delay us.
                        return
                    if eof:
                        reading = False
                        poller.unregister(rfd)
            if exited:
                if reading:
                    read_into(run, config, rfd)
                return
    finally:
        os.close(pidfd)


def collect_dump(pid: int, dump_fd: int) -> str:
    """Ask the test process for every thread's stack (``DUMP_SIGNAL``) and read what it
    wrote to ``dump_fd`` within ``DUMP_GRACE``."""
    try:
        os.kill(pid, DUMP_SIGNAL)
    except ProcessLookupError:
        return ""
    end = time.monotonic() + DUMP_GRACE
    size = -1
    while time.monotonic() < end:
        time.sleep(0.05)
        now = os.fstat(dump_fd).st_size
        if now == size and now > 0:
            break
        size = now
    return os.pread(dump_fd, 1 << 22, 0).decode(errors="replace")


def reap(pid: int) -> int:
    """Wait for our child ``pid``; its wait status (0 if someone else reaped it)."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
