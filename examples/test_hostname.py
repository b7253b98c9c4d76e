"""(f) The hostname.

Each sandbox has its own UTS namespace. The hostname is 'isolated' unless a
marker, --isolate-hostname or the isolate_hostname ini key says otherwise. Code
that reads the machine's name (log lines, cache keys, "am I on CI?" checks) sees
the same name on every machine. (The test itself may not change it:
sethostname() fails with EPERM, as it would for an unprivileged user.)
"""

from __future__ import annotations

import socket

import pytest


def test_default_hostname(sandbox: None) -> None:
    assert socket.gethostname() == "isolated"


@pytest.mark.isolated(hostname="box")
def test_hostname_from_marker(sandbox: None) -> None:
    assert socket.gethostname() == "box"
