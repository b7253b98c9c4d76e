"""How isolated tests work with pytest's own features and with other plugins.

``shares`` (the paths shared into every sandbox: Hypothesis' example database,
tmp_path's base directory, coverage's data), ``coverage`` (pytest-cov), ``timeout``
(pytest-timeout), ``reruns`` (pytest-rerunfailures), ``xdist`` (pytest-xdist), and here
what the test process adds before and after the protocol and to its reports
(record_xml_attribute). Each
function is called from one hook in ``plugin`` or one place in ``testprocess.main``;
both processes run this code.
"""

from __future__ import annotations

import pytest

from .. import _compat
from . import coverage, xdist
from .reruns import RERUN_HARD_FAIL
from .timeout import TIMEOUT_SETTINGS, arm_deferred_timeout

# Attributes the test process adds to its reports for pytest's process (see annotate_report).
JUNIT_ATTRS = "isolate_junit_attrs"


# -- in the test process ------------------------------------------------------------------
def child_starting(item: pytest.Item) -> None:
    """In the test process, before the protocol."""
    xdist.drop_worker_channel(item.config)  # its hook calls reach pytest's process only
    _compat.disown_parent_setup(item)  # pytest's process tears those down, once
    arm_deferred_timeout(item)


def child_finished(item: pytest.Item) -> None:
    """In the test process, after the protocol and before it reports DONE."""
    if item.stash.get(TIMEOUT_SETTINGS, None) is not None:
        item.config.hook.pytest_timeout_cancel_timer(item=item)
    coverage.save_in_child(item.config)


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
