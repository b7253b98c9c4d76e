"""The wrappers around private pytest APIs: each fails here first if pytest changes."""

from __future__ import annotations

import pytest

from pytest_isolate import _compat

PYTEST_VERSION = tuple(int(p) for p in pytest.__version__.split(".")[:2])


def test_share_node_id_gives_a_decoded_report_the_items_own(pytester: pytest.Pytester) -> None:
    modcol = pytester.getmodulecol("def test_x(): pass", configargs=("-p", "no:isolate"))
    (item,) = pytester.genitems([modcol])
    assert isinstance(item, pytest.Item)
    data: dict[str, object] = {
        "$report_type": "TestReport", "nodeid": item.nodeid, "location": list(item.location),
        "keywords": {}, "outcome": "passed", "longrepr": None, "when": "call", "sections": [],
        "duration": 0.0, "start": 0.0, "stop": 0.0, "user_properties": [],
    }  # fmt: skip
    report = pytester.parseconfig("-p", "no:isolate").hook.pytest_report_from_serializable(
        config=item.config, data=data
    )
    _compat.share_node_id(report, item)
    assert report.nodeid == item.nodeid
    if PYTEST_VERSION >= (9, 2):  # parsed node ids: one object, the item's
        assert getattr(report, "_id") is getattr(item, "_id")  # noqa: B009
    else:
        assert report.nodeid is item.nodeid


SHARED_SUITE = """
import pytest

@pytest.fixture(scope="module")
def shared():
    return 1

def test_a(shared): pass
def test_b(shared): pass

@pytest.mark.parametrize("x", [1, 2])
def test_c(shared, x): pass

class TestD:
    def test_d(self): pass
"""


def test_shared_setup_and_teardown_are_skipped_only_when_there_is_nothing_to_do(
    pytester: pytest.Pytester,
) -> None:
    modcol = pytester.getmodulecol(SHARED_SUITE, configargs=("-p", "no:isolate"))
    items = [i for i in pytester.genitems([modcol]) if isinstance(i, pytest.Item)]
    a, b, c1, c2, d = items
    for item in items:
        item._initrequest()  # type: ignore[attr-defined]
    assert _compat.setup_shared_needed(a)  # nothing set up yet
    assert _compat.fixture_runs(a.config) == 0
    _compat.setup_shared(a)
    assert _compat.fixture_runs(a.config) == 1  # a test process forked before is stale
    assert not _compat.setup_shared_needed(b)  # same module, the fixture is cached
    assert not _compat.teardown_needed(a, b)
    assert _compat.setup_shared_needed(c1)  # parametrized: always through setup_shared
    assert _compat.setup_shared_needed(d)  # its class is not set up yet
    assert _compat.teardown_needed(c2, None)  # the last test tears everything down
    _compat.setup_shared(d)
    # Only its class, which has no setup of its own: bookkeeping, no fixture run.
    assert _compat.fixture_runs(a.config) == 1
    assert _compat.teardown_needed(d, a)  # the class goes before a test outside it
    assert _compat.teardown_is_bookkeeping(d, b)  # back into the module: the class only
    assert not _compat.teardown_is_bookkeeping(d, None)  # the module's fixture too
    _compat.teardown_to(d, None)
    assert not _compat.teardown_needed(d, None)
    assert _compat.fixture_runs(a.config) == 2
