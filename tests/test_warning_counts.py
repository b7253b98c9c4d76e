"""acceptance/warning_counts.py on the output of real pytest runs: the warnings count,
pytest-isolate's own counted apart, with and without ``-n 2``, plain and isolated."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "acceptance"))
import warning_counts as wc
from conftest import RunPytest, needs_cgroup_v1

SUITE = """
import warnings, pytest

@pytest.mark.parametrize("i", range(3))
def test_each_its_own(i):
    warnings.warn(UserWarning(f"warning {i}"))

@pytest.mark.parametrize("i", range(12))
def test_same_message(i):
    warnings.warn(UserWarning("the same"))  # 12 locations: pytest folds them per file

def test_quiet():
    pass
"""

OWN = """
import warnings, pytest

def pytest_collection_finish(session):  # where the plugin warns once per session
    warnings.warn(pytest.PytestWarning("pytest-isolate: once, in no test"))

@pytest.fixture(autouse=True)
def _own(request):
    if request.node.name.startswith("test_same_message"):
        warnings.warn(pytest.PytestWarning("pytest-isolate: as the plugin warns"))
"""


def _count(run: RunPytest, *args: str) -> wc.WarningCount:
    return wc.count_warnings(run("-q", *args).stdout.str())


def test_counts_a_plain_run(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(test_demo=SUITE)
    assert _count(run) == wc.WarningCount(total=15, own=0)


def test_counts_pytest_isolates_own_apart(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(test_demo=SUITE)
    pytester.makeconftest(OWN)
    # 12 in the tests (folded: "test_demo.py: 12 warnings") and one in no test
    assert _count(run) == wc.WarningCount(total=28, own=13)
    assert _count(run).tests == 15


@needs_cgroup_v1
@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["n0", "n2"])
def test_isolated_runs_count_as_plain_runs(
    pytester: pytest.Pytester, run: RunPytest, xdist: tuple[str, ...]
) -> None:
    pytester.makepyfile(test_demo=SUITE)
    plain = _count(run, *xdist)
    isolated = _count(run, "--isolate-all", *xdist)
    assert plain.tests == 15
    assert isolated.tests == plain.tests, "isolated, each warning must be counted once"


def test_total_of_a_run_without_warnings() -> None:
    assert wc.total_warnings("collected 1 item\n\n1 passed in 0.01s\n") == 0
    assert wc.total_warnings("== 1 failed, 2 passed, 1 warning in 0.1s ==\n") == 1
    assert wc.count_warnings("") == wc.WarningCount(0, 0)


def test_counts_listed_warnings_apart(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(test_demo=SUITE)
    log = run("-q").stdout.str()
    # "the same" is raised by 12 tests, listed in one folded block
    assert wc.count_warnings(log, ["UserWarning: the same"]) == wc.WarningCount(15, 0, 12)
    assert wc.count_warnings(log, ["UserWarning: the same"]).tests == 3
