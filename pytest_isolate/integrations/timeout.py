"""pytest-timeout: its timer belongs in the test process, around the test.

pytest-timeout arms its timer in ``pytest_runtest_protocol``, in pytest's process;
for an isolated test, its settings are kept for the test process, which arms it there.
The sandbox's own ``timeout`` stays around it.
"""

from __future__ import annotations

from typing import Any

import pytest

TIMEOUT_SETTINGS = pytest.StashKey[Any]()


def defer_timeout(item: pytest.Item, settings: Any) -> bool:
    """pytest-timeout arms its timer in pytest_runtest_protocol, in pytest's process; for an
    isolated test, keep its settings for the test process, which arms it there."""
    item.stash[TIMEOUT_SETTINGS] = settings
    return True


def arm_deferred_timeout(item: pytest.Item) -> None:
    """In the test process, before the protocol: arm pytest-timeout's whole-test timer."""
    settings = item.stash.get(TIMEOUT_SETTINGS, None)
    if settings is not None:
        item.config.hook.pytest_timeout_set_timer(item=item, settings=settings)
