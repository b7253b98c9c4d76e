"""(c) File writes do not leak.

Every sandbox sees an overlay snapshot of the host's filesystem: the test may
write, create and delete anywhere, even in /etc, and all of it vanishes with the
sandbox. The host is unchanged afterwards, which the pytest_sessionfinish hook in
conftest.py checks on the host itself once all tests are done ("host unchanged: ok").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import DELETED_FILE, ETC_MARKER, HOME_MARKER, ROOTDIR_MARKER_NAME


def test_writes_stay_in_the_sandbox(sandbox: None, request: pytest.FixtureRequest) -> None:
    # A system directory: on the host only root could write here.
    ETC_MARKER.write_text("written inside a sandbox\n")
    # The project directory (examples/ is the rootdir) and the home directory.
    rootdir_marker = request.config.rootpath / ROOTDIR_MARKER_NAME
    rootdir_marker.write_text("written inside a sandbox\n")
    HOME_MARKER.write_text("written inside a sandbox\n")
    # Deleting is just as harmless.
    if DELETED_FILE.exists():
        os.remove(DELETED_FILE)

    # Inside the sandbox, the changes are real.
    assert ETC_MARKER.read_text() == "written inside a sandbox\n"
    assert rootdir_marker.exists() and HOME_MARKER.exists()
    assert not DELETED_FILE.exists()


def test_each_sandbox_starts_from_the_host(sandbox: None) -> None:
    # A new sandbox for every test: the previous test's writes are gone here too.
    assert not ETC_MARKER.exists()
    assert not HOME_MARKER.exists()
    assert Path("/etc/passwd").exists()  # and the host's files are all there
