"""The only module that imports pytest's private ``_pytest`` package.

Everything here is something pytest itself does in its runner or plugins and does
not (yet) expose: running the setup/call/teardown protocol without logging,
tearing the parent's setup state down to the next item, and the per-test warning
capture. Each is checked against pytest 8.x and 9.x by the test suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pytest.nodes import Node as _Node
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


# How often pytest's process ran fixture code (setup_shared, teardown_to): a test process
# forked ahead of its turn is of use only if this has not changed since (controller.Spare).
# Steps that are only pytest's bookkeeping (``teardown_is_bookkeeping``,
# ``setup_is_bookkeeping``: moving from one file or class to the next, where nothing of
# the user's runs) do not count: a test process copes with them itself
# (``disown_parent_setup``).
_FIXTURE_RUNS = pytest.StashKey[int]()


def fixture_runs(config: pytest.Config) -> int:
    return config.stash.get(_FIXTURE_RUNS, 0)


def _count_fixture_run(config: pytest.Config) -> None:
    config.stash[_FIXTURE_RUNS] = fixture_runs(config) + 1


def teardown_to(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Tear down what the parent set up that ``nextitem`` does not need."""
    if not teardown_is_bookkeeping(item, nextitem):
        _count_fixture_run(item.config)
    item.session._setupstate.teardown_exact(nextitem)


def teardown_is_bookkeeping(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    """Whether ``teardown_to`` runs nothing but pytest's bookkeeping: each collector it
    tears down set up fine and has no teardown of its own and no finalizer (no fixture
    scoped to it, no xunit teardown)."""
    stack: dict[Any, tuple[list[Any], Any]] = item.session._setupstate.stack
    kept = nextitem.listchain() if nextitem is not None else []
    for node, (finalizers, exc) in stack.items():
        if node in kept:
            continue
        if exc is not None:
            return False
        if any(getattr(fin, "__func__", None) is not _Node.teardown for fin in finalizers):
            return False
    return True


def setup_is_bookkeeping(item: pytest.Item) -> bool:
    """Whether ``setup_shared`` runs nothing but pytest's bookkeeping: no earlier setup
    failed, each collector it sets up has no setup of its own (a module, a class, a
    directory: not a package, whose ``__init__`` may have one), and every wider-scoped
    fixture the item requests is cached already (a session-scoped one, say)."""
    stack: dict[Any, tuple[list[Any], Any]] = item.session._setupstate.stack
    if any(exc is not None for _, exc in stack.values()):
        return False
    if item.parent is not None:
        for node in item.parent.listchain():
            if node not in stack and type(node).setup is not _Node.setup:
                return False
    return _shared_fixtures_cached(item)


def _shared_fixtures_cached(item: pytest.Item) -> bool:
    """Whether every wider-scoped fixture ``item`` requests is cached, without an error.
    A parametrized test's may change with the parameter: never, if it has any."""
    names = shared_fixture_names(item)
    if not names:
        return True
    if getattr(item, "callspec", None) is not None:
        return False
    info = item._fixtureinfo  # type: ignore[attr-defined]
    for name in names:
        cached = info.name2fixturedefs[name][-1].cached_result
        if cached is None or cached[2] is not None:
            return False
    return True


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


def shared_fixture_names(item: pytest.Item) -> list[str]:
    """The fixtures ``item`` requests statically whose scope is wider than the function."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    names = []
    for name in getattr(item, "fixturenames", ()):
        defs = info.name2fixturedefs.get(name)
        if defs and defs[-1].scope != "function":
            names.append(name)
    return names


def setup_shared(item: pytest.Item) -> None:
    """Set up here what plain pytest would set up for ``item`` beyond the item itself:
    the collector chain (session, package, module, class) and the wider-scoped fixtures
    it requests. They are cached by pytest and torn down here by ``teardown_to``; the
    test process inherits their values and sets up only the function-scoped ones."""
    if not setup_is_bookkeeping(item):
        _count_fixture_run(item.config)
    if item.parent is not None:
        item.session._setupstate.setup(item.parent)  # type: ignore[arg-type]
    request = getattr(item, "_request", None)
    names = shared_fixture_names(item)
    if not request or not names:
        return
    # The item is "active" while its fixtures are requested (pytest checks), but it is set
    # up, and its function-scoped fixtures are run and finalized, in the test process.
    stack: dict[Any, tuple[list[Any], Any]] = item.session._setupstate.stack
    stack[item] = ([], None)
    try:
        for name in names:
            request.getfixturevalue(name)
    finally:
        del stack[item]


def setup_shared_needed(item: pytest.Item) -> bool:
    """Whether ``setup_shared`` has anything to do (or an earlier failure to repeat): a
    collector of the chain not set up yet, or a shared fixture not cached. Parametrized
    tests always go through it (their shared fixtures may change with the parameter)."""
    stack: dict[Any, tuple[list[Any], Any]] = item.session._setupstate.stack
    if any(exc is not None for _, exc in stack.values()):
        return True
    if item.parent is not None and any(node not in stack for node in item.parent.listchain()):
        return True
    return not _shared_fixtures_cached(item)


def teardown_needed(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    """Whether ``teardown_to`` has anything to tear down before ``nextitem``."""
    stack: dict[Any, tuple[list[Any], Any]] = item.session._setupstate.stack
    if nextitem is None:
        return bool(stack)
    kept = nextitem.listchain()
    return any(node not in kept for node in stack)


def disown_parent_setup(item: pytest.Item) -> None:
    """In the test process: drop the finalizers of what pytest's process set up.

    Those are torn down once, by pytest's process; the test process tears down only
    what it set up itself (the item's function-scoped fixtures, and anything wider it
    requested dynamically). A collector not in the item's chain is one pytest's
    process has torn down since this process's copy of it was made, in a step that
    was only bookkeeping (``teardown_is_bookkeeping``): it goes, and the collectors the
    item needs instead are set up here, as they were there, by pytest's runner (with
    no setup of their own: ``setup_is_bookkeeping``)."""
    stack: dict[Any, tuple[list[Any], Any]] = item.session._setupstate.stack
    chain = item.listchain()
    for node, (_, exc) in list(stack.items()):
        if node in chain:
            stack[node] = ([], exc)
        else:
            del stack[node]


def teardown_for(item: pytest.Item) -> None:
    """In a test process: tear down the setup state to what ``item`` needs, before it runs
    there (an item run before the test: ``ChildContext.before``). What pytest's process set
    up has no finalizers here (``disown_parent_setup``): nothing of it runs twice."""
    item.session._setupstate.teardown_exact(item)


def release_request(item: pytest.Item) -> None:
    """What pytest's runner does after the protocol: drop the item's fixture request."""
    if getattr(item, "_request", None):
        item._request = False  # type: ignore[attr-defined]
        item.funcargs = None  # type: ignore[attr-defined]


def renew_request(item: pytest.Item) -> None:
    """Before a rerun: a fresh fixture request, as ``runtestprotocol`` makes one."""
    if hasattr(item, "_request") and not item._request:
        item._initrequest()  # type: ignore[attr-defined]


def forget_failed_setup(item: pytest.Item) -> None:
    """Before a rerun: forget cached setup failures, so the rerun sets them up again."""
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        for defs in info.name2fixturedefs.values():
            for fixturedef in defs:
                cached = fixturedef.cached_result
                if cached is not None and cached[2] is not None:
                    fixturedef.cached_result = None
    stack: dict[Any, tuple[list[Any], Any]] = item.session._setupstate.stack
    for node in [node for node, (_, exc) in stack.items() if exc is not None]:
        del stack[node]


@contextmanager
def captured_phase(item: pytest.Item, when: str) -> Iterator[list[tuple[str, str]]]:
    """Capture output as pytest does around a phase; yields the new report sections."""
    capman = item.config.pluginmanager.getplugin("capturemanager")
    sections: list[tuple[str, str]] = []
    if capman is None:
        yield sections
        return
    before = len(item._report_sections)
    try:
        with capman.item_capture(when, item):
            yield sections
    finally:
        for rwhen, key, content in item._report_sections[before:]:
            sections.append((f"Captured {key} {rwhen}", content))


def basetemp(config: pytest.Config) -> Path | None:
    """Make (as the tmp_path fixture would) and return the session's base temp dir."""
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return None
    return factory.getbasetemp()  # type: ignore[no-any-return]


def junit_node_attributes(config: pytest.Config, nodeid: str) -> dict[str, str]:
    """Attributes ``record_xml_attribute`` set on this test's junit-xml node."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return {}
    for (reporter_nodeid, _), reporter in xml.node_reporters.items():
        if str(reporter_nodeid) == str(nodeid):
            return dict(reporter.attrs)
    return {}


def set_junit_node_attributes(config: pytest.Config, nodeid: str, attrs: dict[str, str]) -> None:
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is not None and attrs:
        reporter = xml.node_reporter(nodeid)
        for name, value in attrs.items():
            reporter.add_attribute(name, value)


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
