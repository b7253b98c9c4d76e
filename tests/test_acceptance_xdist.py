"""End to end: ``--isolate-all -n 2`` reports what ``--isolate-all`` alone reports.

One suite, run both ways (real pytest runs in subprocesses); each test compares one
kind of result: outcomes, warnings, captured output, report sections. The order of the
tests differs under xdist, so each is compared per test, and xdist's "[gwN] linux ..."
lines are left out.
"""

from __future__ import annotations

import re

import pytest

from conftest import IS_ROOT, RunPytest

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root on Linux (namespaces, mounts)")

CONFTEST = """
import warnings, pytest

@pytest.fixture
def noisy_setup():
    warnings.warn(UserWarning("from setup"))
    print("setup says hi")
    yield
    print("teardown says bye")
"""

SUITE = """
import logging, sys, warnings, pytest

@pytest.mark.parametrize("i", range(3))
def test_warns(i):
    warnings.warn(UserWarning(f"warning {i}"))

def test_warns_in_setup(noisy_setup):
    print("call says hi")
    warnings.warn(DeprecationWarning("from the call"))

def test_output():
    print("to stdout")
    print("to stderr", file=sys.stderr)

def test_fails():
    print("before failing")
    assert 1 == 2

def test_skips():
    pytest.skip("not here")

@pytest.mark.xfail(reason="known")
def test_xfails():
    assert False

def test_sections(request):
    logging.getLogger("suite").warning("logged in the call")
    request.node.add_report_section("call", "custom", "section of test_sections")

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

def test_errors(broken):
    pass
"""

GW_LINE = re.compile(r"^\[gw\d+\] ")
HEADER = re.compile(r"^_{3,} (.+?) _{3,}$")
SECTION = re.compile(r"^-{3,} (.+?) -{3,}$")  # "Captured ...", or a terminal summary's
MAJOR = re.compile(r"^={3,} (.+?) ={3,}$")


def _runs(pytester: pytest.Pytester, run: RunPytest) -> tuple[str, str]:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    args = ("--isolate-all", "-rA", "-W", "always::DeprecationWarning")
    serial = run(*args, "-n", "0").stdout.str()
    parallel = run(*args, "-n", "2").stdout.str()
    assert "2 workers [10 items]" in parallel, parallel
    return serial, parallel


def _major_sections(out: str) -> dict[str, list[str]]:
    """The lines of each "==== NAME ====" part of pytest's output, without xdist's."""
    parts: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        match = MAJOR.match(line)
        if match:
            current = match.group(1)
            parts.setdefault(current, [])
        elif not GW_LINE.match(line):
            parts.setdefault(current, []).append(line)
    return parts


def _per_test(lines: list[str]) -> dict[str, dict[str, str]]:
    """Each "____ test ____" block: its "---- Captured ... ----" sections and their text;
    "" holds what comes before the first (a failure's traceback)."""
    tests: dict[str, dict[str, str]] = {}
    test = section = ""
    for line in lines:
        header, captured = HEADER.match(line), SECTION.match(line)
        if header:
            test, section = header.group(1), ""
            tests[test] = {"": ""}
        elif captured and test:
            section = captured.group(1)
            tests[test][section] = ""
        elif test:
            tests[test][section] += line + "\n"
    return tests


def _reports(out: str) -> dict[str, dict[str, str]]:
    """The report sections of each test shown, and "" for its traceback."""
    parts = _major_sections(out)
    found: dict[str, dict[str, str]] = {}
    for name in ("ERRORS", "FAILURES", "PASSES"):
        for test, sections in _per_test(parts.get(name, [])).items():
            found[f"{name} {test}"] = {
                key: text for key, text in sections.items() if not key or "Captured" in key
            }
    return found


def _warnings(out: str) -> tuple[int, list[str]]:
    """The count on the last line, and the blocks of the warnings summary, sorted."""
    match = re.search(r"(\d+) warnings?", out.splitlines()[-1])
    lines = _major_sections(out).get("warnings summary", [])
    blocks = "\n".join(line for line in lines if not line.startswith("-- Docs:")).split("\n\n")
    return int(match.group(1)) if match else 0, sorted(b.strip() for b in blocks if b.strip())


def test_xdist_gives_the_same_outcomes(pytester: pytest.Pytester, run: RunPytest) -> None:
    serial, parallel = _runs(pytester, run)

    def outcomes(out: str) -> tuple[str, list[str]]:
        last = re.sub(r" in [\d.]+s.*", "", out.splitlines()[-1])
        short = _major_sections(out)["short test summary info"]
        return last, sorted(short)

    assert outcomes(serial)[0] == (
        "==== 1 failed, 6 passed, 1 skipped, 1 xfailed, 5 warnings, 1 error"
    ), serial
    assert outcomes(parallel) == outcomes(serial), parallel


def test_xdist_gives_the_same_warnings(pytester: pytest.Pytester, run: RunPytest) -> None:
    serial, parallel = _runs(pytester, run)
    count, blocks = _warnings(serial)
    assert count == 5 and len(blocks) == 5, serial
    assert "UserWarning: from setup" in "\n".join(blocks)
    assert "DeprecationWarning: from the call" in "\n".join(blocks)
    assert _warnings(parallel) == (count, blocks), parallel


def test_xdist_gives_the_same_captured_output(pytester: pytest.Pytester, run: RunPytest) -> None:
    serial, parallel = _runs(pytester, run)

    def captured(out: str) -> dict[str, dict[str, str]]:
        return {
            test: {name: text for name, text in sections.items() if "Captured std" in name}
            for test, sections in _reports(out).items()
        }

    expected = captured(serial)
    assert expected["PASSES test_output"] == {
        "Captured stdout call": "to stdout\n",
        "Captured stderr call": "to stderr\n",
    }
    assert expected["PASSES test_warns_in_setup"] == {
        "Captured stdout setup": "setup says hi\n",
        "Captured stdout call": "call says hi\n",
        "Captured stdout teardown": "teardown says bye\n",
    }
    assert expected["FAILURES test_fails"] == {"Captured stdout call": "before failing\n"}
    assert captured(parallel) == expected, parallel


def test_xdist_gives_the_same_report_sections(pytester: pytest.Pytester, run: RunPytest) -> None:
    serial, parallel = _runs(pytester, run)
    expected = _reports(serial)
    assert expected["PASSES test_sections"]["Captured custom call"] == (
        "section of test_sections\n"
    )
    assert "logged in the call" in expected["PASSES test_sections"]["Captured log call"]
    assert "RuntimeError: setup broke" in expected["ERRORS ERROR at setup of test_errors"][""]
    assert "assert 1 == 2" in expected["FAILURES test_fails"][""]
    assert _reports(parallel) == expected, parallel
