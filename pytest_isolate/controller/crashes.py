"""Reports pytest-isolate writes itself: for a test process that died without its final
report (a crash, a timeout, an OOM kill, garbage on the pipe), for a test that could not
be run at all, and the usage notes added to every isolated test's reports.
"""

from __future__ import annotations

import os
import time

import pytest

from .. import _compat, wire
from ..cgroups import Usage
from ..reporting import (
    Record,
    describe_exit,
    format_bytes,
    format_seconds,
    oom_text,
    pids_text,
)
from ..spec import IsolationSpec
from .waiting import Run

PHASES = ("setup", "call", "teardown")


def _report(
    item: pytest.Item,
    when: str,
    outcome: str,
    longrepr: str | None,
    sections: list[tuple[str, str]] | None = None,
    start: float = 0.0,
    stop: float = 0.0,
) -> pytest.TestReport:
    return pytest.TestReport(
        nodeid=item.nodeid,
        location=item.location,
        keywords={k: 1 for k in item.keywords},
        outcome=outcome,  # type: ignore[arg-type]
        longrepr=longrepr,
        when=when,  # type: ignore[arg-type]
        sections=sections or [],
        duration=stop - start,
        start=start,
        stop=stop,
        user_properties=list(item.user_properties),
    )


def error_reports(item: pytest.Item, message: str) -> list[pytest.TestReport]:
    """A test that could not be run at all: an error in setup, with this message."""
    now = time.time()
    return [
        _report(item, "setup", "failed", message, start=now, stop=now),
        _report(item, "teardown", "passed", None, start=now, stop=now),
    ]


def missing_phases(run: Run, config: pytest.Config) -> list[str]:
    """The phases pytest's runner reports for every test that are missing from ``run``:
    setup; call, after a setup that passed (not with --setup-only); teardown."""
    setup = next((r for r in run.reports if r.when == "setup"), None)
    wanted = ["setup"]
    if setup is not None and setup.passed and not config.getoption("setuponly", False):
        wanted.append("call")
    wanted.append("teardown")
    got = {r.when for r in run.reports}
    return [phase for phase in wanted if phase not in got]


def complete(run: Run, config: pytest.Config) -> bool:
    """Whether the test process sent everything: its last message after every report of
    its test, or pytest.exit() or a KeyboardInterrupt (which end the session wherever they
    are raised)."""
    if run.exit is not None or run.interrupt is not None:
        return True  # the session ends: no more reports were to come
    return run.done and not run.garbage and not missing_phases(run, config)


def _crash_phase(run: Run, config: pytest.Config) -> str:
    """The phase a test process that died was in: the one after its last report, as
    pytest's runner goes on (no call after a setup that did not pass, or with
    --setup-only). Each report is sent as its phase ends, so nothing else is needed."""
    if not run.reports:
        return "setup"
    last = run.reports[-1]
    if last.when == "setup" and last.passed and not config.getoption("setuponly", False):
        return "call"
    return "teardown"


def synthesize(
    item: pytest.Item, run: Run, spec: IsolationSpec, usage: Usage, dump: str, start: float
) -> tuple[list[pytest.TestReport], str]:
    """The reports of a test process that ended without its last report, and the event
    the summary lists it under ("timeout", "oom" or "crash")."""
    missing = missing_phases(run, item.config) if run.done else []
    phase = missing[0] if missing else _crash_phase(run, item.config)
    event = "crash"
    if run.timed_out:
        event = "timeout"
        text = f"Timeout: the test ran past its timeout of {format_seconds(spec.timeout or 0)}; "
        text += f"the sandbox was killed during {phase}.\n\n"
        text += f"timeout after {format_seconds(spec.timeout or 0)}"
        text += (
            f"\n\nPython stack of every thread at the deadline:\n{dump}"
            if dump.strip()
            else "\n\n(no stack: the test process did not answer the dump signal)"
        )
    elif usage.oom_kills and run.status is not None and os.WIFSIGNALED(run.status):
        event = "oom"
        text = f"The isolated test was killed during {phase}: {oom_text(spec, usage)}."
    elif run.too_large:
        text = (
            f"The isolated test's output was too large: its {phase} report, with the output "
            f"captured, is {format_bytes(run.too_large)}, more than the "
            f"{format_bytes(wire.MAX_PAYLOAD)} a report may be; the sandbox was killed. Write "
            f"less, or run it with -s (--capture=no) to see the output as it is written."
        )
    elif run.garbage:
        text = (
            f"The isolated test process wrote something that is not a report to the report "
            f"pipe during {phase} ({run.garbage}); the sandbox was killed."
        )
    elif run.refused:
        text = f"pytest-isolate could not run this test as asked: {run.refused}"
    elif run.error:
        text = f"pytest-isolate failed inside the test process during {phase}:\n{run.error}"
    elif missing:
        text = (
            f"The isolated test process said it had finished, but pytest never received "
            f"its {' and '.join(missing)} report{'s' if len(missing) > 1 else ''}: the test "
            f"counts as failed."
        )
    else:
        text = f"The isolated test process {describe_exit(run.status)} during {phase}"
        text += " without reporting its result."
        if run.reader.partial:
            text += " It died in the middle of sending a message to pytest."
        elif run.status is not None and os.WIFEXITED(run.status):
            text += " (os._exit(), or it closed its report pipe.)"
    if usage.pids_limit_hits:
        text += f"\n{pids_text(spec, usage)}."
    out, err = _compat.read_captured(item.config)
    sections = [
        (f"Captured {name} {phase}", value)
        for name, value in (("stdout", out), ("stderr", err))
        if value
    ]
    now = time.time()
    reports = [
        r for r in run.reports if r.when != phase and PHASES.index(r.when) < PHASES.index(phase)
    ]
    reports.append(_report(item, phase, "failed", text, sections, start, now))
    if phase != "teardown":
        reports.append(_report(item, "teardown", "passed", None, start=now, stop=now))
    return reports, event


def annotate(reports: list[pytest.TestReport], record: Record, spec: IsolationSpec) -> None:
    """Add the usage record to every report, and a note on the pids cap or an OOM kill
    that did not end the test to the first failed one (or the last)."""
    usage = record.usage
    notes = []
    if usage.pids_limit_hits and record.event != "crash":
        notes.append(pids_text(spec, usage))
    if usage.oom_kills and record.event != "oom":
        notes.append(
            f"{usage.oom_kills} process(es) of the test were killed: {oom_text(spec, usage)}"
        )
    properties = record.properties()
    for report in reports:
        report.user_properties = [*report.user_properties, *properties]
    if notes and reports:
        target = next((r for r in reports if r.failed), reports[-1])
        target.sections.append(("isolation", "\n".join(notes)))
