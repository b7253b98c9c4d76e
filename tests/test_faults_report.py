"""Faults in the test process's dealings with pytest's: children it hands to pytest
(clone(CLONE_PARENT)), a forged report frame, output too large for a report, and
KeyboardInterrupt. Each ends as a clear report or as in a plain run, never a hang."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import RunPytest, needs_cgroup_v1

pytestmark = needs_cgroup_v1
CONDITIONS = str(Path(__file__).with_name("conditions.py"))


CLONE_PARENT = """
import ctypes, os, platform, signal, pytest

libc = ctypes.CDLL(None, use_errno=True)
CLONE = {{"x86_64": 56, "aarch64": 220}}[platform.machine()]
CLONE_PARENT, CLONE_NEWPID = 0x00008000, 0x20000000

@pytest.mark.isolated
@pytest.mark.parametrize("flags", [CLONE_PARENT, CLONE_PARENT | CLONE_NEWPID] * 5)
def test_child_of_pytest(flags):
    pid = libc.syscall(CLONE, flags | signal.SIGCHLD, 0, 0, 0, 0)
    if pid == 0:  # pytest's child, not ours, in our sandbox (or a namespace below it)
        os.execv("/bin/sleep", ["sleep", "{tag}"])
    assert pid > 0

def test_in_pytest():
    pass

@pytest.mark.isolated
def test_isolated_after():
    pass
"""


def test_clone_parent_children_do_not_hang_the_session(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    """A test's clone(CLONE_PARENT) child is pytest's: pytest reaps it when its sandbox is
    killed, or that sandbox never finishes dying and the session hangs."""
    tag = f"1000.{uuid.uuid4().int % 10**12:012d}"
    pytester.makepyfile(CLONE_PARENT.format(tag=tag))
    result = run("-q", timeout=60)
    result.assert_outcomes(passed=12)
    assert _processes_with(tag) == []


def _processes_with(tag: str) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if tag in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:  # gone, or a zombie: no command line
            pass
    return found


FORGED = """
import json, os, struct, pytest

def _pipes():
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if fd > 2 and os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                yield fd
        except OSError:
            pass

@pytest.mark.isolated
def test_writes_done_to_its_pipes():
    data = b"{}"
    done = struct.pack(">2scI", b"\\xa7\\x1e", b"D", len(data)) + data  # a frame as on main
    for fd in _pipes():
        try:
            os.write(fd, done)
        except OSError:
            pass
    assert 0

@pytest.mark.isolated
def test_sends_done_through_the_channel():
    from pytest_isolate import wire
    from pytest_isolate.testprocess.main import current_channel
    current_channel().send(wire.Kind.DONE, {})
    assert 0

@pytest.mark.isolated
def test_passes():
    pass
"""


@pytest.mark.parametrize("condition", ["sandbox", "fork-only"])
def test_a_forged_done_does_not_hide_the_test(pytester: pytest.Pytester, condition: str) -> None:
    """A test that writes a well-formed "done" frame to its report pipe, or sends one
    through pytest-isolate's own channel, still fails: the frame is not a report (the pipe
    has a key of its own), and a test process that says it is done without every report
    counts as failed."""
    pytester.makepyfile(FORGED)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
    if condition == "fork-only":
        command = [sys.executable, CONDITIONS, "seccomp-unshare", "--", *command]
    result = pytester.run(*command, "-q", timeout=120)
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert "wrote something that is not a report to the report pipe during call" in out
    assert (
        "The isolated test process said it had finished, but pytest never received its call "
        "and teardown reports: the test counts as failed." in out
    )


def test_too_much_output_says_so(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import sys, pytest

        @pytest.mark.isolated
        def test_writes_260_mib():
            line = "y" * 1023 + "\\n"
            for _ in range(260 * 1024):
                sys.stdout.write(line)

        def test_after():
            pass
        """
    )
    result = run("-q", timeout=300)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "not a report" not in out
    result.stdout.fnmatch_lines(
        ["*The isolated test's output was too large: its call report, with the output captured,"
         " is 260.* MiB, more than the 256.0 MiB a report may be*"]
    )  # fmt: skip


def test_keyboard_interrupt_in_a_test_ends_the_session(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    """As in a plain run: the session ends, interrupted (status 2); no test fails."""
    pytester.makepyfile(
        """
        import pytest

        def test_before():
            pass

        @pytest.mark.isolated
        def test_interrupts():
            raise KeyboardInterrupt

        def test_after():
            pass
        """
    )
    result = run("-v", timeout=120)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out
    assert "test_after" not in out
    assert "status 130" not in out and "FAILED" not in out, out
    result.stdout.fnmatch_lines(["*in the isolated test*test_interrupts (raised at *:8)*"])
