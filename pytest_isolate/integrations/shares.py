"""Host paths shared read-write into every sandbox of a session: the user's
(``--isolate-share``), coverage's data directory, Hypothesis' example database and
tmp_path's base directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

import pytest

from .. import _compat
from . import coverage

# Fixtures that make tmp_path's base directory: it must exist on the host and be shared.
TMP_FIXTURES = frozenset({"tmp_path", "tmpdir", "tmp_path_factory", "tmpdir_factory"})


def session_shares(
    config: pytest.Config, isolated: Iterable[pytest.Item], user: Iterable[str]
) -> list[str]:
    """The host paths every sandbox of this session gets read-write: the user's
    (``--isolate-share``), coverage's data directory, Hypothesis' example database and
    tmp_path's base directory, each only when some isolated test needs it."""
    items = list(isolated)
    shares = list(user)
    cov = coverage.prepare(config)
    if cov is not None:
        shares.append(cov.directory)
    db = _hypothesis_directory(items)
    if db is not None:
        shares.append(db)
    if any(TMP_FIXTURES.intersection(getattr(item, "fixturenames", ())) for item in items):
        base = _compat.basetemp(config)
        if base is not None:
            shares.append(str(base))
    unique: list[str] = []
    for path in shares:
        if path not in unique:
            unique.append(path)
    return unique


def _hypothesis_directory(items: list[pytest.Item]) -> str | None:
    """Hypothesis' storage directory (``.hypothesis`` by default), if an isolated test uses
    it: its example database must outlive the sandbox to replay a failure next run."""
    if "hypothesis" not in sys.modules:
        return None
    if not any(getattr(getattr(item, "obj", None), "is_hypothesis_test", False) for item in items):
        return None
    from hypothesis.configuration import storage_directory

    where: Any = storage_directory(intent_to_write=False)
    home = getattr(where, "home_directory", where)  # a Path before Hypothesis 6.1xx
    create = getattr(where, "create_if_missing", None)
    if create is not None:
        create()  # as Hypothesis would: the directory and its .gitignore
    os.makedirs(home, exist_ok=True)
    return str(os.path.abspath(os.fspath(home)))
