"""Shared helpers for the examples, and the host-side check that runs at the end.

Everything at module level here runs in the pytest process itself, on the host,
before any test is forked into its sandbox. The test processes are forked from
pytest, so they inherit these values.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

# Things the examples do inside their sandboxes; the end-of-session check below
# makes sure none of them reached the host.
ETC_MARKER = Path("/etc/example-isolate-marker")
HOME_MARKER = Path.home() / ".example-isolate-marker"
ROOTDIR_MARKER_NAME = "example-isolate-marker.txt"
DELETED_FILE = Path("/etc/hostname")
DAEMON_CMDLINE = ["sleep", "1000.123"]  # a unique argument, easy to look for

# Remembered on the host, before any test runs.
HOST_MOUNT_NS = os.stat("/proc/self/ns/mnt").st_ino
DELETED_FILE_EXISTED = DELETED_FILE.exists()


def in_sandbox() -> bool:
    """True in a test process that pytest-isolate forked into a sandbox.

    The sandbox has its own mount namespace, so /proc/self/ns/mnt names another one.
    """
    return os.stat("/proc/self/ns/mnt").st_ino != HOST_MOUNT_NS


@pytest.fixture
def sandbox() -> None:
    """Skip a test unless it runs isolated.

    Some examples delete files or start daemons: harmless in a sandbox, not on your
    machine. Under --no-isolate (or without the plugin) they are skipped.
    """
    if not in_sandbox():
        pytest.skip("this example only runs isolated: use --isolate-all, without --no-isolate")


def _daemons() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == DAEMON_CMDLINE and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def _host_problems(rootdir: Path) -> list[str]:
    problems = []
    for path in (ETC_MARKER, HOME_MARKER, rootdir / ROOTDIR_MARKER_NAME):
        if path.exists():
            problems.append(f"{path} exists on the host")
    if DELETED_FILE_EXISTED and not DELETED_FILE.exists():
        problems.append(f"{DELETED_FILE} was deleted on the host")
    # The last sandbox of the session may still be being torn down: give it a moment.
    deadline = time.monotonic() + 5
    while _daemons() and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in _daemons():
        problems.append(f"the daemon {' '.join(DAEMON_CMDLINE)!r} is still running, pid {proc.pid}")
    return problems


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Runs in the pytest process, on the host, after every test has finished."""
    if session.config.getoption("collectonly"):
        return
    problems = _host_problems(session.config.rootpath)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    write = reporter.write_line if reporter is not None else print
    write("")
    if problems:
        write("host changed by the examples (the session fails):")
        for problem in problems:
            write(f"  {problem}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        write("host unchanged: ok")
