"""How isolated tests work with pytest's own features and with other plugins.

pytest-cov (``coverage_support``), Hypothesis' example database, tmp_path's base
directory, record_xml_attribute, pytest-timeout and pytest-rerunfailures. Each
function is called from one hook in ``plugin.py`` or one place in ``child.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from . import _compat, coverage_support

# Fixtures that make tmp_path's base directory: it must exist on the host and be shared.
TMP_FIXTURES = frozenset({"tmp_path", "tmpdir", "tmp_path_factory", "tmpdir_factory"})
# Attributes the test process adds to its reports for pytest's process (see annotate_report).
JUNIT_ATTRS = "isolate_junit_attrs"
RERUN_HARD_FAIL = "isolate_rerun_hard_fail"


# -- paths shared read-write into every sandbox ---------------------------------------------
def session_shares(
    config: pytest.Config, isolated: Iterable[pytest.Item], user: Iterable[str]
) -> list[str]:
    """The host paths every sandbox of this session gets read-write: the user's
    (``--isolate-share``), coverage's data directory, Hypothesis' example database and
    tmp_path's base directory, each only when some isolated test needs it."""
    items = list(isolated)
    shares = list(user)
    cov = coverage_support.prepare(config)
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


# -- in the test process ------------------------------------------------------------------
def child_starting(item: pytest.Item) -> None:
    """In the test process, before the protocol."""
    _compat.disown_parent_setup(item)  # pytest's process tears those down, once
    arm_deferred_timeout(item)


def child_finished(item: pytest.Item) -> None:
    """In the test process, after the protocol and before it reports DONE."""
    if item.stash.get(TIMEOUT_SETTINGS, None) is not None:
        item.config.hook.pytest_timeout_cancel_timer(item=item)
    coverage_support.save_in_child(item.config)


def annotate_report(item: pytest.Item, report: pytest.TestReport) -> None:
    """In the test process: add to a report what pytest's process needs and cannot see."""
    if report.when == "teardown":
        attrs = _compat.junit_node_attributes(item.config, item.nodeid)
        if attrs:
            setattr(report, JUNIT_ATTRS, attrs)
    # pytest-rerunfailures decides in its makereport hook (with the exception at hand)
    # whether --only-rerun / --rerun-except forbid a rerun.
    hard = getattr(item, "_terminal_errors", {}).get(report.when)
    if hard:
        setattr(report, RERUN_HARD_FAIL, True)


# -- in pytest's process ------------------------------------------------------------------
def apply_report_extras(item: pytest.Item, reports: list[pytest.TestReport]) -> None:
    for report in reports:
        attrs = report.__dict__.pop(JUNIT_ATTRS, None)
        if attrs:
            _compat.set_junit_node_attributes(item.config, item.nodeid, attrs)


# -- pytest-timeout -------------------------------------------------------------------------
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


# -- pytest-rerunfailures -------------------------------------------------------------------
@dataclass(frozen=True)
class Reruns:
    count: int
    delay: float
    backoff: float = 1.0

    def pause(self, attempt: int) -> float:
        """Seconds to wait before rerun number ``attempt`` (1, 2, ...)."""
        return self.delay * self.backoff ** (attempt - 1)


def reruns_for(item: pytest.Item) -> Reruns | None:
    """pytest-rerunfailures' rerun settings for this test, if it is installed and asks."""
    plugin = item.config.pluginmanager.getplugin("rerunfailures")
    if plugin is None:
        return None
    excluded = getattr(plugin, "_is_rerun_path_excluded", None)
    if excluded is not None and excluded(item):
        return None
    count = plugin.get_reruns_count(item)
    if not count:
        return None
    marker = item.get_closest_marker("flaky")
    condition = marker.kwargs.get("condition") if marker is not None else None
    check = getattr(plugin, "get_reruns_condition", None)
    if condition is not None and not callable(condition) and check is not None:
        if not check(item):  # a static condition (a bool or a string): decided up front
            return None
    delay = plugin.get_reruns_delay(item) if hasattr(plugin, "get_reruns_delay") else 0
    factor = getattr(plugin, "get_reruns_delay_backoff_factor", None)
    backoff = factor(item) if factor is not None else 1.0
    return Reruns(int(count), float(delay or 0), float(backoff))


def rerun_gaps(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """pytest-rerunfailures settings that isolated tests do not honour yet: said once, in
    a warning, never ignored silently."""
    if config.pluginmanager.getplugin("rerunfailures") is None or not items:
        return []
    gaps = []
    if config.getoption("max_suite_reruns", None) is not None:
        gaps.append("--max-suite-reruns")
    if config.getoption("fail_on_flaky", False):
        gaps.append("--fail-on-flaky")
    for item in items:
        marker = item.get_closest_marker("flaky")
        if marker is not None and callable(marker.kwargs.get("condition")):
            gaps.append(f"the callable condition of @pytest.mark.flaky on {item.nodeid}")
    return gaps


def wants_rerun(reports: list[pytest.TestReport]) -> bool:
    """A failure that pytest-rerunfailures would rerun."""
    failed = [r for r in reports if r.failed]
    if not failed or any(hasattr(r, "wasxfail") for r in reports):
        return False
    return not any(getattr(r, RERUN_HARD_FAIL, False) for r in reports)
