"""The parent's side of one test: which phase a test process died in, and which of our
children are test processes in a sandbox."""

from __future__ import annotations

import os
import signal
import time
import types

import pytest

from conftest import needs_root, reap
from pytest_isolate import ffi
from pytest_isolate.cgroups import CgroupError, Limits
from pytest_isolate.controller.builder_client import Lease
from pytest_isolate.controller.crashes import _crash_phase, complete, missing_phases
from pytest_isolate.controller.session import Session, stray_test_processes
from pytest_isolate.controller.turn import run_isolated
from pytest_isolate.controller.waiting import Run
from pytest_isolate.spec import IsolationSpec


def _report(when: str, outcome: str = "passed") -> pytest.TestReport:
    return pytest.TestReport("t.py::t", ("t.py", 0, "t"), {}, outcome, None, when)  # type: ignore[arg-type]


def _config(setuponly: bool = False) -> pytest.Config:
    options = {"setuponly": setuponly}
    return types.SimpleNamespace(getoption=lambda name, default=None: options.get(name, default))  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("reports", "setuponly", "phase"),
    [
        ([], False, "setup"),
        ([("setup", "passed")], False, "call"),
        ([("setup", "passed")], True, "teardown"),  # --setup-only: no call
        ([("setup", "failed")], False, "teardown"),
        ([("setup", "skipped")], False, "teardown"),
        ([("setup", "passed"), ("call", "failed")], False, "teardown"),
        ([("setup", "passed"), ("call", "passed"), ("teardown", "passed")], False, "teardown"),
    ],
)
def test_crash_phase_is_the_one_after_the_last_report(
    reports: list[tuple[str, str]], setuponly: bool, phase: str
) -> None:
    run = Run(pid=0, reports=[_report(when, outcome) for when, outcome in reports])
    assert _crash_phase(run, _config(setuponly)) == phase


@pytest.mark.parametrize(
    ("reports", "setuponly", "missing"),
    [
        ([], False, ["setup", "teardown"]),
        ([("setup", "passed")], False, ["call", "teardown"]),
        ([("setup", "passed")], True, ["teardown"]),  # --setup-only: no call
        ([("setup", "failed"), ("teardown", "passed")], False, []),
        ([("setup", "skipped"), ("teardown", "passed")], False, []),
        ([("setup", "passed"), ("teardown", "passed")], False, ["call"]),
        ([("setup", "passed"), ("call", "failed"), ("teardown", "passed")], False, []),
    ],
)
def test_missing_phases_are_those_pytest_always_reports(
    reports: list[tuple[str, str]], setuponly: bool, missing: list[str]
) -> None:
    run = Run(pid=0, reports=[_report(when, outcome) for when, outcome in reports], done=True)
    assert missing_phases(run, _config(setuponly)) == missing
    assert complete(run, _config(setuponly)) is (missing == [])
    run.exit = {"msg": "bye", "returncode": 3}  # pytest.exit(): the session ends there
    assert complete(run, _config(setuponly))


@needs_root
def test_stray_test_processes_are_our_children_in_a_sandbox_of_the_builder() -> None:
    # A stand-in builder with one "sandbox": an init in a pid namespace of its own.
    r, w = os.pipe()
    builder = os.fork()
    if builder == 0:  # pragma: no cover - the stand-in builder
        try:
            # A child of the builder in our own pid namespace, as a rootless builder's
            # helper is while it forks an init: our ordinary children are no strays.
            helper = os.fork()
            if helper == 0:
                time.sleep(60)
                os._exit(0)
            ffi.unshare(ffi.CLONE_NEWPID)
            init = os.fork()
            if init == 0:
                time.sleep(60)
                os._exit(0)
            os.write(w, str(init).encode())
            os.waitpid(init, 0)
            os.kill(helper, signal.SIGKILL)
            os.waitpid(helper, 0)
        finally:
            os._exit(0)
    os.close(w)
    init = int(os.read(r, 64))
    os.close(r)
    own = os.open("/proc/self/ns/pid", os.O_RDONLY)
    sandbox = os.open(f"/proc/{init}/ns/pid", os.O_RDONLY)
    ordinary = os.fork()
    if ordinary == 0:  # pragma: no cover
        time.sleep(60)
        os._exit(0)
    ffi.setns(sandbox, ffi.CLONE_NEWPID)
    try:
        inside = os.fork()
        if inside == 0:  # pragma: no cover - a test process, in the sandbox
            time.sleep(60)
            os._exit(0)
    finally:
        ffi.setns(own, ffi.CLONE_NEWPID)
        os.close(own)
        os.close(sandbox)
    try:
        assert stray_test_processes(builder) == [inside]
        assert stray_test_processes(ordinary) == []  # not a builder: no sandboxes
    finally:
        for pid in (inside, ordinary, init):
            os.kill(pid, signal.SIGKILL)
        for pid in (inside, ordinary, builder):
            reap(pid)


class _RefusingGroup:
    name = "g"

    def set_limits(self, limits: Limits) -> None:
        raise CgroupError(22, "cannot write '1' to .../memory.limit_in_bytes: Invalid argument")


class _OnePool:
    """A builder stand-in with one sandbox, whose init is a sleeping child of the test."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.released: list[Lease] = []
        self.fds: list[int] = []
        self.pid = os.getpid()

    def settle(self, keep: int = 0) -> None:
        pass

    def dying(self) -> int:
        return 0

    def acquire(self) -> Lease:
        return self.lease

    def release(self, lease: Lease) -> None:
        self.released.append(lease)


def test_a_cap_the_kernel_refuses_fails_that_test_only(pytester: pytest.Pytester) -> None:
    modcol = pytester.getmodulecol("def test_x(): pass", configargs=("-p", "no:isolate"))
    (item,) = pytester.genitems([modcol])
    init = os.fork()
    if init == 0:  # pragma: no cover - stands in for the sandbox's init
        time.sleep(60)
        os._exit(0)
    lease = Lease(1, init, os.pidfd_open(init), _RefusingGroup())  # type: ignore[arg-type]
    pool = _OnePool(lease)
    session = Session(pool, -1, os.memfd_create("t"))  # type: ignore[arg-type]
    try:
        outcome = run_isolated(item, None, IsolationSpec(mem=1 << 20), session)
    finally:
        assert reap(init) != 0  # killed with its sandbox
        os.close(lease.pidfd)
        os.close(session.dump_fd)
    assert pool.released == [lease]
    setup = outcome.reports[0]
    assert (setup.when, setup.outcome) == ("setup", "failed")
    assert "could not set this test's caps" in str(setup.longrepr)
    assert "memory.limit_in_bytes" in str(setup.longrepr)
