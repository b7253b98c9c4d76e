"""(a) A memory cap catches a leak.

The code below leaks 1 MiB per iteration and never stops on its own (well, it
gives up at 1 GiB). Without a cap it would happily eat your CI machine's memory,
and the test would pass. Under ``mem="64M"`` the kernel's OOM killer ends it as
soon as the sandbox uses 64 MiB.

The leak runs in a subprocess so that this demo can *pass*: the cap applies to
the whole sandbox, child processes included, so the subprocess is the one that
is killed, with SIGKILL (returncode -9), and the test checks exactly that.
If the test process itself were killed, pytest-isolate would fail the test with
"out of memory: the cgroup memory limit is 64.0 MiB (mem=67108864), peak usage ...".
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

LEAKY_CODE = """
# Volunteer to be the OOM killer's first choice (any process may raise its own score).
with open("/proc/self/oom_score_adj", "w") as f:
    f.write("1000")
cache = []
for _ in range(1024):                # 1 GiB: far more than the 64 MiB cap
    cache.append(b"x" * 2**20)       # 1 MiB that is never released
print("leaked 1 GiB and nobody noticed")
"""


@pytest.mark.isolated(mem="64M")
def test_leak_is_oom_killed(sandbox: None) -> None:
    result = subprocess.run([sys.executable, "-c", LEAKY_CODE], capture_output=True, text=True)
    # Killed by the cgroup's OOM killer, before it could print anything.
    assert result.returncode == -signal.SIGKILL, (
        f"the leak was not stopped: returncode {result.returncode}, output {result.stdout!r}"
    )
    assert "nobody noticed" not in result.stdout
    # The terminal summary's "isolation" section lists this test under "OOM kill",
    # and the report's user_properties carry isolate_oom_kills=1.
