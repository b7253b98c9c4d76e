"""Coverage measured in isolated tests, saved in the test process and merged by pytest-cov.

The test process inherits coverage's tracer from pytest, but it leaves with
``os._exit`` and its files vanish with the snapshot. So before it reports DONE it
flushes what it measured and writes it, as a coverage data file of its own, into
a directory of the host that is shared read-write into every sandbox. The test
process never writes to pytest's data file or its database connection: coverage
itself starts a new data file when it finds it runs in a forked process, and that
one lives in the snapshot.

When the tests have run, and before pytest-cov combines its data, the files are
moved next to coverage's data file with the ``<data file>.<suffix>`` names that
``coverage combine`` picks up (pytest-cov's own, and the master's under xdist).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any

import pytest

PREFIX = "pytest-isolate-cov-"


@dataclass(frozen=True)
class CoverageShare:
    directory: str
    """The shared directory the test processes write their data files to."""
    data_file: str
    """Coverage's data file in pytest's process (absolute): the files go next to it."""


KEY = pytest.StashKey[CoverageShare]()


def _current() -> Any:
    coverage = sys.modules.get("coverage")
    if coverage is None:
        return None
    return coverage.Coverage.current()


def prepare(config: pytest.Config) -> CoverageShare | None:
    """In pytest's process, if coverage is measuring: a directory for the test processes."""
    cov = _current()
    if cov is None or KEY in config.stash:
        return config.stash.get(KEY, None)
    share = CoverageShare(
        tempfile.mkdtemp(prefix=PREFIX), os.path.abspath(os.fspath(cov.config.data_file))
    )
    config.stash[KEY] = share
    return share


def save_in_child(config: pytest.Config) -> None:
    """In the test process, after the protocol: write what it measured to the shared dir."""
    share = config.stash.get(KEY, None)
    cov = _current()
    if share is None or cov is None:
        return
    import coverage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no data collected" and such: pytest-cov's to say
        cov.stop()
        data = cov.get_data()  # a forked CoverageData starts a new file, in the snapshot
        name = os.path.join(share.directory, os.path.basename(share.data_file))
        out = coverage.CoverageData(basename=name, suffix=f"isolated.{secrets.token_hex(8)}")
        out.update(data)
        out.write()


def collect(config: pytest.Config) -> int:
    """In pytest's process: move the test processes' data files next to coverage's data
    file, where ``coverage combine`` finds them. Returns how many were moved."""
    share = config.stash.get(KEY, None)
    if share is None:
        return 0
    moved = 0
    target_dir = os.path.dirname(share.data_file)
    try:
        names = os.listdir(share.directory)
    except OSError:
        return 0
    for name in names:
        if name.startswith(".") and not name.endswith("-journal"):
            shutil.move(os.path.join(share.directory, name), os.path.join(target_dir, name))
            moved += 1
    return moved


def cleanup(config: pytest.Config) -> None:
    share = config.stash.get(KEY, None)
    if share is not None:
        shutil.rmtree(share.directory, ignore_errors=True)
