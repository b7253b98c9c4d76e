"""The parent's side of one test: which phase a test process died in."""

from __future__ import annotations

import types

import pytest

from pytest_isolate.controller import _crash_phase, _Run


def _report(when: str, outcome: str = "passed") -> pytest.TestReport:
    return pytest.TestReport("t.py::t", ("t.py", 0, "t"), {}, outcome, None, when)  # type: ignore[arg-type]


def _config(setuponly: bool = False) -> pytest.Config:
    options = {"setuponly": setuponly}
    return types.SimpleNamespace(getoption=lambda name, default=None: options.get(name, default))  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("reports", "setuponly", "phase"),
    [
        ([], False, "setup"),
        ([("setup", "passed")], False, "call"),
        ([("setup", "passed")], True, "teardown"),  # --setup-only: no call
        ([("setup", "failed")], False, "teardown"),
        ([("setup", "skipped")], False, "teardown"),
        ([("setup", "passed"), ("call", "failed")], False, "teardown"),
        ([("setup", "passed"), ("call", "passed"), ("teardown", "passed")], False, "teardown"),
    ],
)
def test_crash_phase_is_the_one_after_the_last_report(
    reports: list[tuple[str, str]], setuponly: bool, phase: str
) -> None:
    run = _Run(pid=0, reports=[_report(when, outcome) for when, outcome in reports])
    assert _crash_phase(run, _config(setuponly)) == phase
