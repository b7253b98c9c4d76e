"""The only module that imports pytest's private ``_pytest`` package.

Everything here is something pytest itself does in its runner or plugins and does
not (yet) expose: running the setup/call/teardown protocol without logging,
tearing the parent's setup state down to the next item, and the per-test warning
capture. Each is checked against pytest 8.x and 9.x by the test suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
from _pytest.runner import runtestprotocol as _runtestprotocol
from _pytest.warnings import catch_warnings_for_item as _catch_warnings_for_item

if TYPE_CHECKING:
    from _pytest.capture import CaptureManager


def run_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> list[pytest.TestReport]:
    """Setup, call and teardown ``item`` without logging the reports."""
    return _runtestprotocol(item, log=False, nextitem=nextitem)


@contextmanager
def warnings_captured(item: pytest.Item) -> Iterator[None]:
    """What pytest's warnings plugin wraps around each test, for a forked test process."""
    with _catch_warnings_for_item(item.config, item.ihook, when="runtest", item=item):
        yield


def teardown_to(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Tear down what the parent set up that ``nextitem`` does not need."""
    item.session._setupstate.teardown_exact(nextitem)


def share_node_id(report: pytest.TestReport, item: pytest.Item) -> None:
    """Give a decoded report the item's own node id object.

    pytest >= 9.2 keeps a parsed node id in each report (``_id``); a decoded report holds
    its own copy, and pytest keeps every report until the session ends. Before 9.2 the
    node id is a plain string, shared through the ``nodeid`` attribute.
    """
    item_id = getattr(item, "_id", None)
    if item_id is not None and hasattr(report, "_id"):
        if str(item_id) == report.nodeid:
            report._id = item_id
    elif report.nodeid == item.nodeid:
        report.nodeid = item.nodeid


def _capture_manager(config: pytest.Config) -> CaptureManager | None:
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None or getattr(capman, "_global_capturing", None) is None:
        return None
    return capman  # type: ignore[no-any-return]


def read_captured(config: pytest.Config) -> tuple[str, str]:
    """Output a crashed test process left in the (shared) global capture files."""
    capman = _capture_manager(config)
    if capman is None:
        return "", ""
    try:
        out, err = capman.read_global_capture()
    except (AssertionError, OSError, ValueError):
        return "", ""
    return out, err
