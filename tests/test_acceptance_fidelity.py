"""End to end: a test file gives the same results with and without isolation."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import RunPytest, needs_root

pytestmark = needs_root

SUITE = """
import logging, sys, warnings, pytest

@pytest.fixture
def broken_setup():
    raise RuntimeError("setup broke")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_pass(record_property):
    record_property("answer", 42)
    print("to stdout")
    sys.stderr.write("to stderr\\n")
    logging.getLogger("suite").warning("a log line")

def test_fail():
    print("failing output")
    assert [1, 2] == [1, 3]

def test_skip():
    pytest.skip("not today")

@pytest.mark.skip(reason="marked skip")
def test_skip_marker():
    pass

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert 0

@pytest.mark.xfail(reason="fixed now", strict=False)
def test_xpass():
    pass

def test_error_in_setup(broken_setup):
    pass

def test_error_in_teardown(broken_teardown):
    pass

def test_warns():
    warnings.warn("careful", UserWarning)

class CustomWarning(UserWarning):
    pass

def test_custom_warning():
    warnings.warn(CustomWarning("custom"))

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n == 1
"""


def _normalize_xml(path: Path) -> list[tuple[str, str, str, list[tuple[str, str]], str, str]]:
    root = ET.parse(path).getroot()
    cases = []
    for case in root.iter("testcase"):
        kinds = sorted(child.tag for child in case if child.tag not in ("properties",))
        outcome = ",".join(k for k in kinds if k in ("failure", "error", "skipped")) or "passed"
        props = sorted(
            (p.get("name", ""), p.get("value", ""))
            for p in case.iter("property")
            if not p.get("name", "").startswith("isolate_")
        )
        out = (case.findtext("system-out") or "").strip()
        err = (case.findtext("system-err") or "").strip()
        cases.append((case.get("classname", ""), case.get("name", ""), outcome, props, out, err))
    return cases


def _outcome_lines(stdout: str) -> list[str]:
    lines = [
        line
        for line in stdout.splitlines()
        if re.match(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) ", line)
    ]
    return sorted(lines)


def test_same_results_with_and_without_isolation(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(test_suite=SUITE)
    plain = run("-rA", "--junitxml=plain.xml", "-o", "junit_logging=all")
    isolated = run("-rA", "--junitxml=isolated.xml", "-o", "junit_logging=all", "--isolate-all")
    expected = dict(passed=5, failed=2, skipped=2, xfailed=1, xpassed=1, errors=2)
    plain.assert_outcomes(**expected, warnings=3)
    assert isolated.parseoutcomes() == plain.parseoutcomes()
    assert _outcome_lines(isolated.stdout.str()) == _outcome_lines(plain.stdout.str())
    assert _normalize_xml(pytester.path / "isolated.xml") == _normalize_xml(
        pytester.path / "plain.xml"
    )
    for result in (plain, isolated):
        result.stdout.fnmatch_lines(
            [
                "*warnings summary*",
                "test_suite.py::test_warns",
                "*UserWarning: careful*",
                "test_suite.py::test_custom_warning",
                "*CustomWarning: custom*",
            ]
        )
        result.stdout.fnmatch_lines(
            [
                "*Captured stdout call*",
                "to stdout",
                "*Captured stderr call*",
                "to stderr",
                "*Captured log call*",
                "*a log line*",
            ]
        )
    props = [p for p in ET.parse(pytester.path / "isolated.xml").getroot().iter("property")]
    names = {p.get("name") for p in props}
    assert {"answer", "isolate_wall_s", "isolate_peak_mem_bytes", "isolate_cpu_user_s"} <= names


def test_warnings_as_errors_and_exitfirst(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import warnings

        def test_a():
            warnings.warn("now an error", DeprecationWarning)

        def test_b():
            pass
        """
    )
    for extra in ([], ["--isolate-all"]):
        result = run("-W", "error::DeprecationWarning", "-x", *extra)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*DeprecationWarning: now an error*"])


def test_pytest_exit_inside_stops_the_session(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_a():
            pytest.exit("enough", returncode=3)

        def test_b():
            pass
        """
    )
    for extra in ([], ["--isolate-all"]):
        result = run("-v", *extra)
        assert result.ret == 3
        result.stdout.fnmatch_lines(["*Exit: enough*"])
        assert "::test_b" not in result.stdout.str()


def test_terminal_summary_section(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        def test_small():
            pass

        def test_big():
            data = bytearray(40 * 2**20)
            data[::4096] = b"x" * len(data[::4096])
        """
    )
    result = run("--isolate-all")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*- isolation -*",
            "2 tests isolated",
            "top peak memory:",
            "*MiB  test_terminal_summary_section.py::test_big",
            "*top CPU time:",
        ]
    )
