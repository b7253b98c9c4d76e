"""Escapes through the test process's place among processes: its process group and
session (kill(0), group priorities) and its terminal (/dev/tty, TIOCSTI, settings). Each
is checked from the host, the inner pytest running in a session of its own."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from conftest import needs_root

CONDITIONS = str(Path(__file__).with_name("conditions.py"))


PROCESS_GROUP = """
import ctypes, os, platform, signal, subprocess, pytest

libc = ctypes.CDLL(None, use_errno=True)
IOPRIO_SET, IOPRIO_GET = {"x86_64": (251, 252), "aarch64": (30, 31)}[platform.machine()]
IOPRIO_WHO_PROCESS, IOPRIO_WHO_PGRP = 1, 2
IDLE = 3 << 13  # IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0)
# At import, in pytest's own process.
BEFORE = (os.getpriority(os.PRIO_PROCESS, 0), libc.syscall(IOPRIO_GET, IOPRIO_WHO_PROCESS, 0))

@pytest.mark.isolated
def test_kill_zero():
    os.kill(os.getppid(), signal.SIGTERM)  # getppid() is 0 here: kill(0), our own group

@pytest.mark.isolated
def test_trap_kill_zero():
    subprocess.run(["bash", "-c", "trap 'kill 0' EXIT; true"])

@pytest.mark.isolated
def test_group_priorities():
    os.setpriority(os.PRIO_PGRP, 0, 19)
    assert libc.syscall(IOPRIO_SET, IOPRIO_WHO_PGRP, 0, IDLE) == 0
    assert os.getpriority(os.PRIO_PROCESS, 0) == 19  # it did reach this process

def test_pytest_unchanged():
    now = (os.getpriority(os.PRIO_PROCESS, 0), libc.syscall(IOPRIO_GET, IOPRIO_WHO_PROCESS, 0))
    assert now == BEFORE
"""


@needs_root
def test_process_group_calls_reach_the_sandbox_only(pytester: pytest.Pytester) -> None:
    """kill(0), setpriority(PRIO_PGRP, 0) and ioprio_set(IOPRIO_WHO_PGRP, 0) in a test reach
    the test's own process group, never pytest's. (The inner pytest gets a session of its
    own: without the fix its kill(0) would reach ours.)"""
    pytester.makepyfile(test_group=PROCESS_GROUP)
    result = pytester.run(
        "setsid", "-w", sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
        "-p", "no:randomly", "-q", timeout=120,
    )  # fmt: skip
    out = result.stdout.str()
    assert result.ret == 1, out
    result.assert_outcomes(passed=2, failed=2)
    # Count the failure sections' lines only: the short summary repeats each message, in
    # full where pytest sees a CI (the CI variable set) and cut to the width elsewhere.
    message = "The isolated test process was killed by signal 15 (SIGTERM) during call"
    crashed = [line for line in result.stdout.lines if line.startswith(message)]
    assert len(crashed) == 2, out


TERMINAL = """
import errno, fcntl, os, termios, pytest

def _ttys():
    return [int(fd) for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")
            and os.isatty(int(fd))]

@pytest.mark.isolated
def test_no_controlling_terminal():
    with pytest.raises(OSError) as exc:
        os.open("/dev/tty", os.O_RDWR)
    assert exc.value.errno == errno.ENXIO

@pytest.mark.isolated
def test_no_keystrokes_injected():
    ttys = _ttys()
    assert ttys  # pytest's terminal is in reach: -s's streams, or capture's copies of them
    for fd in ttys:
        with pytest.raises(OSError) as exc:
            fcntl.ioctl(fd, termios.TIOCSTI, b"#")
        assert exc.value.errno == errno.EPERM

@pytest.mark.isolated
def test_turns_echo_off():
    for fd in _ttys():
        attrs = termios.tcgetattr(fd)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    assert not termios.tcgetattr(_ttys()[0])[3] & termios.ECHO

@pytest.mark.isolated
def test_output():
    print("OUTPUT" + "-OF-THE-TEST")
    assert 0
"""


def _run_on_terminal(
    pytester: pytest.Pytester, *args: str, condition: str = ""
) -> tuple[int, str, bool]:
    """Run pytest with a new pseudo-terminal as its controlling terminal and standard
    streams, as from a shell; its exit status, what it wrote, and whether echo is on.
    ``condition``: a degraded host to run it on (``tests/conditions.py``)."""
    main, terminal = os.openpty()
    try:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
        if condition:
            command = [sys.executable, CONDITIONS, condition, "--", *command]
        proc = subprocess.Popen(
            ["setsid", "-c", "-w", *command, *args],
            cwd=pytester.path, stdin=terminal, stdout=terminal, stderr=terminal,
        )  # fmt: skip
        out = bytearray()
        deadline = time.monotonic() + 60
        while proc.poll() is None or select.select([main], [], [], 0)[0]:
            if time.monotonic() > deadline:
                proc.kill()
            if select.select([main], [], [], 0.1)[0]:
                out += os.read(main, 1 << 16)
        proc.wait()
        echo = bool(termios.tcgetattr(terminal)[3] & termios.ECHO)
        return proc.returncode, out.decode(errors="replace"), echo
    finally:
        os.close(main)
        os.close(terminal)


@needs_root
@pytest.mark.parametrize("capture", ["fd", "no"])
@pytest.mark.parametrize("condition", ["", "seccomp-unshare"], ids=["sandbox", "fork-only"])
def test_no_controlling_terminal_and_settings_restored(
    pytester: pytest.Pytester, capture: str, condition: str
) -> None:
    """The test cannot open /dev/tty or push keystrokes into pytest's terminal; a change to
    its settings is undone when the test ends; output capture and -s work as before.
    (Fork-only, a test run by root holds CAP_SYS_ADMIN, which lets TIOCSTI through.)"""
    pytester.makepyfile(test_terminal=TERMINAL)
    names = ["no_controlling_terminal", "no_keystrokes_injected", "turns_echo_off"]
    args = [f"--capture={capture}", "-v"]
    if condition:
        names.remove("no_keystrokes_injected")
        args += ["--deselect", "test_terminal.py::test_no_keystrokes_injected"]
    code, out, echo = _run_on_terminal(pytester, *args, condition=condition)
    assert code == 1, out
    assert "fork only" in out if condition else "fork only" not in out
    for name in names:
        assert f"test_{name} PASSED" in out, out
    assert "FAILED test_terminal.py::test_output - assert 0" in out, out
    assert echo, "the test left the terminal with echo off"
    assert "OUTPUT-OF-THE-TEST" in out
    assert ("Captured stdout call" in out) == (capture == "fd"), out
