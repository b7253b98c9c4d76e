"""The pure parts of acceptance/third_party.py: junitxml -> outcomes, the comparison
with the expected-difference table, and the pinned project table itself."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "acceptance"))
import third_party as tp
from conftest import RunPytest, needs_cgroup_v1

SUITE = """
import pytest

def test_pass():
    pass

def test_fail():
    assert False

def test_skip():
    pytest.skip("no")

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="not any more", strict=False)
def test_xpass():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("setup")

def test_setup_error(broken):
    pass

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown")

def test_teardown_error(bad_teardown):
    pass

def test_fail_and_teardown_error(bad_teardown):
    assert False

@pytest.mark.parametrize("x", ["a b", "c::d"])
def test_param(x):
    assert x != "c::d"

class TestK:
    def test_m(self):
        pass
"""

EXPECTED_OUTCOMES = {
    "test_demo::test_pass": "passed",
    "test_demo::test_fail": "failed",
    "test_demo::test_skip": "skipped",
    "test_demo::test_xfail": "xfailed",
    "test_demo::test_xpass": "passed",
    "test_demo::test_setup_error": "error",
    "test_demo::test_teardown_error": "error",
    "test_demo::test_fail_and_teardown_error": "failed+error",
    "test_demo::test_param[a b]": "passed",
    "test_demo::test_param[c::d]": "failed",
    "test_demo.TestK::test_m": "passed",
}


def _outcomes_of_real_run(pytester: pytest.Pytester, run: RunPytest, *args: str) -> dict[str, str]:
    pytester.makepyfile(test_demo=SUITE)
    xml = pytester.path / "out.xml"
    result = run(f"--junitxml={xml}", *args)
    assert result.ret == 1
    return tp.parse_junitxml(xml.read_text())


def test_parse_junitxml_of_a_real_plain_run(pytester: pytest.Pytester, run: RunPytest) -> None:
    assert _outcomes_of_real_run(pytester, run) == EXPECTED_OUTCOMES


@needs_cgroup_v1
def test_parse_junitxml_of_a_real_isolated_run_gives_the_same_outcomes(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    assert _outcomes_of_real_run(pytester, run, "--isolate-all") == EXPECTED_OUTCOMES


def test_parse_junitxml_collection_error_and_skip_types() -> None:
    xml = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="0" skipped="2" tests="4">
<testcase classname="" name="tests.test_broken" time="0.000">
  <error message="collection failure">ImportError</error></testcase>
<testcase classname="tests.test_a" name="test_s" time="0.001">
  <skipped type="pytest.skip" message="nope">x</skipped></testcase>
<testcase classname="tests.test_a" name="test_x" time="0.001">
  <skipped type="pytest.xfail" message="known" /></testcase>
<testcase classname="tests.test_a" name="test_p" time="0.001">
  <system-out>chatter</system-out><properties><property name="k" value="v"/></properties>
</testcase>
</testsuite></testsuites>"""
    assert tp.parse_junitxml(xml) == {
        "tests.test_broken": "error",
        "tests.test_a::test_s": "skipped",
        "tests.test_a::test_x": "xfailed",
        "tests.test_a::test_p": "passed",
    }


def _entry(key: str, plain: str, isolated: str) -> tp.ExpectedDifference:
    return tp.ExpectedDifference(key, plain, isolated, f"reason for {key}")


def test_compare_identical() -> None:
    outcomes = {"a": "passed", "b": "failed", "c": "skipped"}
    c = tp.compare(outcomes, dict(outcomes))
    assert (c.identical, c.expected, c.unexpected, c.stale, c.ok) == (3, (), (), (), True)


def test_compare_unlisted_difference_is_unexpected() -> None:
    c = tp.compare({"a": "passed", "b": "passed"}, {"a": "passed", "b": "failed"})
    assert c.identical == 1
    assert c.unexpected == (tp.Difference("b", "passed", "failed", None),)
    assert not c.ok


def test_compare_listed_difference_is_expected_with_its_reason() -> None:
    table = [_entry("net", "passed", "failed")]
    c = tp.compare({"net": "passed", "x": "passed"}, {"net": "failed", "x": "passed"}, table)
    assert c.ok
    assert c.expected == (tp.Difference("net", "passed", "failed", "reason for net"),)
    assert c.unexpected == ()
    assert c.stale == ()


def test_compare_listed_key_with_other_outcomes_is_unexpected() -> None:
    # The table says passed -> failed; an error (or the reverse direction) is news.
    table = [_entry("net", "passed", "failed")]
    c = tp.compare({"net": "passed"}, {"net": "error"}, table)
    assert not c.ok
    assert c.unexpected == (tp.Difference("net", "passed", "error", None),)
    assert c.stale == tuple(table)


def test_compare_missing_test_is_a_difference() -> None:
    c = tp.compare({"a": "passed", "gone": "passed"}, {"a": "passed", "new": "passed"})
    assert c.unexpected == (
        tp.Difference("gone", "passed", tp.MISSING, None),
        tp.Difference("new", tp.MISSING, "passed", None),
    )


def test_compare_reports_stale_entries_without_failing() -> None:
    table = [_entry("net", "passed", "failed")]
    c = tp.compare({"net": "passed"}, {"net": "passed"}, table)
    assert c.ok
    assert c.identical == 1
    assert c.stale == tuple(table)


def test_overhead_ms_per_test() -> None:
    assert tp.overhead_ms_per_test(10.0, 12.5, 100) == pytest.approx(25.0)
    assert tp.overhead_ms_per_test(10.0, 9.0, 100) == pytest.approx(-10.0)
    assert tp.overhead_ms_per_test(1.0, 2.0, 0) is None


def test_sdist_filename_is_normalized() -> None:
    project = tp.Project("python-dotenv", "1.2.4", "0" * 64, "", ())
    assert tp.sdist_filename(project) == "python_dotenv-1.2.4.tar.gz"


def test_sha256_of(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert tp.sha256_of(f) == expected


@pytest.mark.parametrize("project", tp.PROJECTS, ids=lambda p: p.name)
def test_project_table_is_pinned_and_explained(project: tp.Project) -> None:
    assert re.fullmatch(r"\d+(\.\d+)*", project.version), project.version
    assert re.fullmatch(r"[0-9a-f]{64}", project.sha256), project.sha256
    for dep in project.deps:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", dep), dep
    assert project.why and project.test_args
    for skip in project.deselected:
        assert "::" in skip.nodeid and skip.reason
    keys = [e.key for e in project.expected]
    assert len(keys) == len(set(keys))
    outcomes = {"passed", "failed", "error", "skipped", "xfailed", tp.MISSING}
    for entry in project.expected:
        assert entry.reason and entry.plain != entry.isolated
        assert {entry.plain, entry.isolated} <= outcomes


def test_project_table_has_four_distinct_projects() -> None:
    names = [p.name for p in tp.PROJECTS]
    assert len(names) >= 4 and len(set(names)) == len(names)


def test_pytest_argv_adds_isolation_only_to_the_isolated_run() -> None:
    project = tp.Project(
        "p", "1", "0" * 64, "w", ("tests",), deselected=(tp.Deselected("t.py::f", "r"),)
    )
    python = Path("/v/bin/python")
    plain = tp.pytest_argv(python, project, tp.PLAIN, Path("/x.xml"), Path("/t"))
    isolated = tp.pytest_argv(python, project, tp.ISOLATED, Path("/x.xml"), Path("/t"))
    assert "--isolate-all" not in plain
    assert [a for a in isolated if a not in plain] == list(tp.ISOLATE_ARGS)
    assert plain[-2:] == ["--deselect=t.py::f", "tests"]
    assert "--junitxml=/x.xml" in plain
    assert plain[plain.index("-c") + 1] == "/t/pyproject.toml"
    assert "--rootdir=/t" in plain


def test_restore_signal_defaults_unignores_inherited_ignores() -> None:
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGINT)}
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        tp.restore_signal_defaults()
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_xdist_runs_add_n_2() -> None:
    project = tp.Project("p", "1", "0" * 64, "w", ("tests",))
    python = Path("/v/bin/python")
    argv = {
        mode: tp.pytest_argv(python, project, mode, Path("/x.xml"), Path("/t"))
        for mode in (tp.PLAIN, tp.ISOLATED, tp.PLAIN_XDIST, tp.ISOLATED_XDIST)
    }
    assert [a for a in argv[tp.PLAIN_XDIST] if a not in argv[tp.PLAIN]] == ["-n", "2"]
    assert [a for a in argv[tp.ISOLATED_XDIST] if a not in argv[tp.ISOLATED]] == ["-n", "2"]
