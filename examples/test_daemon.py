"""(d) A daemon does not outlive its test.

Tests that start servers, workers or helpers sometimes forget to stop them, or
crash before they can. Here the test starts a real daemon (its own session,
reparented away from the test: ``setsid --fork``) and deliberately leaves it
running. The daemon is inside the sandbox's pid namespace, so it dies with the
sandbox when the test ends. The pytest_sessionfinish hook in conftest.py checks
on the host that no ``sleep 1000.123`` process is left.
"""

from __future__ import annotations

import os
import subprocess
import time

from conftest import DAEMON_CMDLINE


def _find_daemon() -> int | None:
    for entry in os.listdir("/proc"):  # the sandbox's own /proc: only its processes
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().split(b"\0")[:-1]
            except OSError:
                continue
            if [arg.decode() for arg in cmdline] == DAEMON_CMDLINE:
                return int(entry)
    return None


def test_leaked_daemon_dies_with_the_sandbox(sandbox: None) -> None:
    # setsid --fork: the daemon gets its own session and its parent exits at once.
    subprocess.run(["setsid", "--fork", *DAEMON_CMDLINE], check=True)

    deadline = time.monotonic() + 1
    while (pid := _find_daemon()) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pid is not None, "the daemon did not start"
    # Orphans are adopted by the sandbox's pid 1 (this test process is pid 2).
    with open(f"/proc/{pid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    assert ppid == 1
    # No cleanup on purpose: the daemon is still running when this test returns.
