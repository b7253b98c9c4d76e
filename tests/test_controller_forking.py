"""``fork_quietly``: no multi-threaded-fork DeprecationWarning (Python 3.12+) from our forks.

``os.fork`` is replaced by a stand-in that warns as CPython 3.12 does: the suite
never forks the process that runs it.
"""

from __future__ import annotations

import os
import warnings

import pytest

from pytest_isolate.controller import forking


def _warning_fork() -> int:
    warnings.warn(
        f"This process (pid={os.getpid()}) is multi-threaded, use of fork() may lead to "
        "deadlocks in the child.",
        DeprecationWarning,
        stacklevel=2,
    )
    return 4242


def test_the_multi_threaded_fork_warning_is_silenced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fork", _warning_fork)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert forking.fork_quietly() == 4242


def test_other_warnings_still_surface(monkeypatch: pytest.MonkeyPatch) -> None:
    def other() -> int:
        warnings.warn("something else", DeprecationWarning, stacklevel=2)
        return 1

    monkeypatch.setattr(os, "fork", other)
    with warnings.catch_warnings(), pytest.raises(DeprecationWarning, match="something else"):
        warnings.simplefilter("error")
        forking.fork_quietly()
