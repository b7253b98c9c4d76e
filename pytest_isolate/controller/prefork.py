"""When the next test's process may be forked while the current test runs.

A test process forked early (``session.Spare``) holds a copy of pytest's process
as it was then. It is used only where that copy is the one a fork at the test's turn
would have made: pytest's process runs none of the code in between that could
change what the test sees. That code is fixture setup and teardown (checked at the
turn, ``_compat.fixture_runs``) and the hooks around a test's protocol. So a test
process is forked early only if:

- the next test is isolated, in the same directory (the same conftest hooks, for
  assertion rewriting among others) and with the same ``filterwarnings`` marks
  (pytest's warning filters for the current test are in force when it is forked);
- pytest's process has nothing to set up for it or to tear down before it but its own
  bookkeeping (from one file or class to the next, where none of the user's code
  runs: ``_compat.teardown_is_bookkeeping``, ``_compat.setup_is_bookkeeping``);
- neither test may be rerun (pytest-rerunfailures);
- every ``pytest_runtest_protocol`` and ``pytest_runtest_logstart`` hook installed
  is one known to change nothing a test process sees (``SAFE_HOOKS``).

Elsewhere each test process is forked at its turn, as always; nothing else differs.

The processes forked early come from the fork server (``forkserver``; its client is
``forkserver_client``), a copy of pytest's process taken at the first of them and
replaced by the same rule: when pytest's process runs fixture code, or a test of its own.
"""

from __future__ import annotations

from typing import Final

import pytest

from .. import _compat
from ..integrations.reruns import reruns_for
from ..spec import IsolationSpec

# The plugins (by registered name or class) whose hooks run in pytest's process between
# an early fork and the test's turn, and change nothing the test process sees there.
SAFE_HOOKS: Final = {
    "pytest_runtest_protocol": frozenset(
        {
            "runner",  # not reached: ours returns first
            "isolate",
            "rerunfailures",  # not reached (and neither test may be rerun)
            "pytest_forked",  # not reached
            "faulthandler",  # a timer in pytest's process only
            "unittest",  # twisted.trial only
            "timeout",  # the test process arms its own (integrations)
            "assertion",  # item.ihook: the same for tests of one file
            "warnings",  # the same filterwarnings marks
        }
    ),
    "pytest_runtest_logstart": frozenset(
        {"terminalreporter", "logging-plugin", "WorkerInteractor"}  # output, xdist's events
    ),
}

_HOOKS_SAFE = pytest.StashKey[bool]()
_INDEX = pytest.StashKey["dict[int, int]"]()


def hooks_safe(config: pytest.Config) -> bool:
    """Whether every hook that runs between an early fork and the test's turn is known."""
    if _HOOKS_SAFE not in config.stash:
        safe = True
        for name, known in SAFE_HOOKS.items():
            for impl in getattr(config.pluginmanager.hook, name).get_hookimpls():
                if impl.plugin_name not in known and type(impl.plugin).__name__ not in known:
                    safe = False
        config.stash[_HOOKS_SAFE] = safe
    return config.stash[_HOOKS_SAFE]


def _filterwarnings(item: pytest.Item) -> list[tuple[object, ...]]:
    return [mark.args for mark in item.iter_markers(name="filterwarnings")]


def upcoming(
    item: pytest.Item, nextitem: pytest.Item | None, decision: object
) -> IsolationSpec | None:
    """The spec to fork ``nextitem``'s test process with while ``item`` runs, or None
    where it must be forked at its turn. ``decision``: what ``nextitem`` is to get."""
    if nextitem is None or not isinstance(decision, IsolationSpec):
        return None
    if not _same_directory(item, nextitem):
        return None
    if not hooks_safe(item.config) or item_index(nextitem) < 0:
        return None
    if _filterwarnings(item) != _filterwarnings(nextitem):
        return None
    if reruns_for(item) is not None or reruns_for(nextitem) is not None:
        return None
    if _compat.teardown_needed(item, nextitem) and not _compat.teardown_is_bookkeeping(
        item, nextitem
    ):
        return None
    if _compat.setup_shared_needed(nextitem) and not _compat.setup_is_bookkeeping(nextitem):
        return None
    return decision


def _same_directory(item: pytest.Item, nextitem: pytest.Item) -> bool:
    path, after = getattr(item, "path", None), getattr(nextitem, "path", None)
    return path is not None and after is not None and path.parent == after.parent


def item_index(item: pytest.Item) -> int:
    """The item's index in ``session.items``: how a test process forked early is told
    which test comes after it. -1 if it is not there."""
    index = item.config.stash.get(_INDEX, None)
    if index is None:
        index = {id(it): i for i, it in enumerate(item.session.items)}
        item.config.stash[_INDEX] = index
    i = index.get(id(item), -1)
    items = item.session.items
    return i if 0 <= i < len(items) and items[i] is item else -1
