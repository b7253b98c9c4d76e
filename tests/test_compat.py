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
