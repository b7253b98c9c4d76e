"""Unit tests for ``pytest_isolate.integrations`` (no sandbox, no fork)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pytest_isolate.integrations import coverage, reruns


def _report(when: str, outcome: str, **extra: Any) -> pytest.TestReport:
    report = pytest.TestReport(
        nodeid="t.py::t", location=("t.py", 0, "t"), keywords={}, outcome=outcome,  # type: ignore[arg-type]
        longrepr=None, when=when,  # type: ignore[arg-type]
    )  # fmt: skip
    report.__dict__.update(extra)
    return report


def test_wants_rerun_only_for_a_plain_failure() -> None:
    passed = [_report("setup", "passed"), _report("call", "passed")]
    failed = [_report("setup", "passed"), _report("call", "failed")]
    assert not reruns.wants_rerun(passed)
    assert reruns.wants_rerun(failed)
    assert not reruns.wants_rerun([*failed[:1], _report("call", "failed", wasxfail="")])
    hard = _report("call", "failed", **{reruns.RERUN_HARD_FAIL: True})
    assert not reruns.wants_rerun([failed[0], hard])


def test_coverage_files_are_moved_next_to_the_data_file(tmp_path: Path) -> None:
    share, project = tmp_path / "share", tmp_path / "project"
    share.mkdir()
    project.mkdir()
    (share / ".coverage.isolated.1").write_text("a")
    (share / ".coverage.isolated.2").write_text("b")
    (share / ".coverage.isolated.3-journal").write_text("half written")
    config = SimpleNamespace(stash=pytest.Stash())
    config.stash[coverage.KEY] = coverage.CoverageShare(
        str(share), str(project / ".coverage")
    )
    assert coverage.collect(cast(pytest.Config, config)) == 2
    assert sorted(p.name for p in project.iterdir()) == [
        ".coverage.isolated.1",
        ".coverage.isolated.2",
    ]
    coverage.cleanup(cast(pytest.Config, config))
    assert not share.exists()


def test_no_coverage_no_work() -> None:
    config = cast(pytest.Config, SimpleNamespace(stash=pytest.Stash()))
    assert coverage.collect(config) == 0
    coverage.cleanup(config)


def test_rerun_pause_backs_off() -> None:
    settings = reruns.Reruns(count=3, delay=0.5, backoff=2.0)
    assert [settings.pause(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert reruns.Reruns(count=1, delay=1.0).pause(3) == 1.0
