"""One isolated test, as pytest's runner would run it, with fixtures' lifetimes kept.

pytest's process sets up what the test shares with other tests (the session,
package, module and class, and the wider-scoped fixtures the test requests),
exactly once, and tears it down once, when the next test no longer needs it. The
test process is forked after that setup: it inherits those values, sets up only
the test's function-scoped fixtures, and tears down only those. Whatever a test
changes in a shared value stays in its sandbox.

With pytest-rerunfailures, every attempt runs in a fresh sandbox; the shared
fixtures stay set up between attempts, as with pytest-rerunfailures alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from .. import _compat, integrations
from ..host.isolation import PROPERTY
from ..integrations import reruns as rerunfailures
from ..reporting import Stats
from ..spec import IsolationSpec
from ..wire.warnings import rebuild_warning
from . import changes, terminal
from .outcome import Outcome

_RERAISE = (pytest.exit.Exception, KeyboardInterrupt)

Runner = Callable[[pytest.Item, "pytest.Item | None", IsolationSpec], Outcome]
"""Runs the test's own part in a child: in a sandbox, or forked only where the host
allows no sandbox."""


def _call(func: Callable[[], None], when: str) -> pytest.CallInfo[None]:
    return pytest.CallInfo.from_call(func, when=when, reraise=_RERAISE)  # type: ignore[arg-type]


def _merge_teardown(
    item: pytest.Item,
    reports: list[pytest.TestReport],
    call: pytest.CallInfo[None],
    sections: list[tuple[str, str]],
) -> None:
    """Fold the teardown done in pytest's process into the test's teardown report."""
    teardown = next((r for r in reversed(reports) if r.when == "teardown"), None)
    if teardown is None:
        reports.append(pytest.TestReport.from_item_and_call(item, call))
        return
    teardown.sections.extend(sections)
    if call.excinfo is None:
        return
    mine = pytest.TestReport.from_item_and_call(item, call)
    if teardown.passed:
        teardown.outcome = mine.outcome
        teardown.longrepr = mine.longrepr
    else:
        teardown.sections.append(("teardown in pytest's process", str(mine.longrepr)))


def run_attempt(
    item: pytest.Item,
    nextitem: pytest.Item | None,
    spec: IsolationSpec,
    runner: Runner,
    rerun_if: Callable[[list[pytest.TestReport]], bool] = lambda reports: False,
) -> tuple[Outcome, bool]:
    """Shared setup here, the test in a sandbox, shared teardown here unless a rerun follows.

    Returns the outcome and whether the test is to be run again.
    """
    _compat.renew_request(item)
    # Output of the shared setup lands in the item's report sections, which the test
    # process inherits: its setup report shows it, as pytest's would.
    # Most tests share what the test before them set up: then there is nothing to do here
    # (and no output to capture) before or after them.
    setup = None
    if _compat.setup_shared_needed(item):
        with _compat.captured_phase(item, "setup"):
            setup = _call(lambda: _compat.setup_shared(item), "setup")
    failed = setup is not None and setup.excinfo is not None
    if setup is not None and failed:
        outcome = Outcome([pytest.TestReport.from_item_and_call(item, setup)], [], None)
    else:
        with terminal.kept():  # what the test changed of pytest's terminal, put back
            outcome = runner(item, nextitem, spec)
    if outcome.interrupt is not None:
        return outcome, False  # the session ends: pytest tears everything down then
    rerun = rerun_if(outcome.reports)
    if rerun:
        if failed:
            teardown = _call(lambda: None, "teardown")
            outcome.reports.append(pytest.TestReport.from_item_and_call(item, teardown))
        return outcome, True
    has_teardown = any(r.when == "teardown" for r in outcome.reports)
    if failed or not has_teardown or _compat.teardown_needed(item, nextitem):
        with _compat.captured_phase(item, "teardown") as sections:
            teardown = _call(lambda: _compat.teardown_to(item, nextitem), "teardown")
        if failed:
            outcome.reports.append(pytest.TestReport.from_item_and_call(item, teardown))
        else:
            _merge_teardown(item, outcome.reports, teardown, sections)
    _compat.release_request(item)
    return outcome, False


def protocol(
    item: pytest.Item,
    nextitem: pytest.Item | None,
    spec: IsolationSpec,
    runner: Runner,
    stats: Stats,
    missing: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """Run and log one isolated test (and its reruns). Returns a pytest.exit() request.

    ``missing`` names the parts of the isolation this host could not give the test: each
    report says so (the ``isolate_missing`` property).
    """
    ihook = item.ihook
    reruns = rerunfailures.reruns_for(item)
    attempt = 0
    while True:
        if attempt:
            ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        can_rerun = reruns is not None and attempt < reruns.count

        def rerun_if(reports: list[pytest.TestReport], can: bool = can_rerun) -> bool:
            return can and rerunfailures.wants_rerun(reports)

        outcome, rerun = run_attempt(item, nextitem, spec, runner, rerun_if)
        for data in outcome.warnings:
            ihook.pytest_warning_recorded.call_historic(
                kwargs=dict(
                    warning_message=rebuild_warning(data),
                    nodeid=item.nodeid,
                    when="runtest",
                    location=None,
                )
            )
        if outcome.record is not None:
            stats.add(outcome.record)
        integrations.apply_report_extras(item, outcome.reports)
        if outcome.changes is not None:
            changes.attach(outcome.reports, outcome.changes)
        for report in outcome.reports:
            if missing:
                report.user_properties.append((PROPERTY, ", ".join(missing)))
            if reruns is not None:
                report.rerun = attempt  # type: ignore[attr-defined]
            if rerun and report.failed:
                report.outcome = "rerun"  # type: ignore[assignment]
            ihook.pytest_runtest_logreport(report=report)
        if outcome.interrupt is not None:  # as pytest's runner lets it through
            raise KeyboardInterrupt(f"in the isolated test {item.nodeid}{outcome.interrupt}")
        if outcome.exit is not None or not rerun or reruns is None:
            return outcome.exit
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        attempt += 1
        time.sleep(reruns.pause(attempt))
        _compat.forget_failed_setup(item)
