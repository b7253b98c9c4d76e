"""End to end: the next test's process is forked while the current test runs, only where
that cannot change what the test sees, and one that is never used leaves nothing behind.

Each inner test records when it ended and when its own process started (``record_property``,
read back from --junitxml): a process forked early started while the test before it ran.
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET

import pytest

from conftest import RunPytest, needs_root

pytestmark = needs_root

# test_b's process starts during test_a's half second if it was forked early; else after it.
PAIR = """
import os, time, pytest

{prelude}

{mark_a}
def test_a(record_property):
    time.sleep(0.5)
    record_property("ended", repr(time.clock_gettime(time.CLOCK_BOOTTIME)))

{mark_b}
def test_b(record_property):
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    record_property("started", repr(ticks / os.sysconf("SC_CLK_TCK")))
"""
# Both on the boot-time clock: "started" is this process's start time, in clock ticks.


# A conftest recording, in pytest's process after each test, its children but the builder:
# those outside any sandbox (fork servers), and how many are in one.
CHILDREN_SEEN = """
import os, psutil

OWN = os.readlink("/proc/self/ns/pid")
SEEN = []

def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    servers, sandboxed = [], 0
    for p in psutil.Process().children():
        try:
            if "pytest_isolate.builder.main" in " ".join(p.cmdline()):
                continue
            ns = os.readlink(f"/proc/{p.pid}/ns/pid")
        except (OSError, psutil.Error):  # a test process that has exited
            continue
        if ns == OWN:
            servers.append(p.pid)
        else:
            sandboxed += 1
    SEEN.append((servers, sandboxed))

def pytest_sessionfinish(session):
    open("seen.txt", "w").write(repr(SEEN))
"""


def _children_seen(pytester: pytest.Pytester) -> list[tuple[list[int], int]]:
    seen: list[tuple[list[int], int]] = ast.literal_eval((pytester.path / "seen.txt").read_text())
    return seen


def _times(pytester: pytest.Pytester) -> dict[str, float]:
    root = ET.parse(pytester.path / "junit.xml").getroot()
    out = {}
    for prop in root.iter("property"):
        if prop.get("name") in ("ended", "started"):
            out[prop.get("name", "")] = float(prop.get("value", ""))
    return out


def _forked_early(pytester: pytest.Pytester, run: RunPytest, *args: str) -> bool:
    result = run("--isolate-all", "--junitxml=junit.xml", "-o", "junit_family=xunit1", "-q", *args)
    result.assert_outcomes(passed=2)
    times = _times(pytester)
    assert set(times) == {"ended", "started"}, times
    # A process's start time has the kernel's tick resolution (10 ms at most).
    return times["started"] < times["ended"] - 0.25


def test_next_test_process_is_forked_while_the_current_test_runs(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    pytester.makepyfile(PAIR.format(prelude="", mark_a="", mark_b=""))
    assert _forked_early(pytester, run)


def test_forked_at_its_turn_under_other_filterwarnings_marks(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    # pytest's warning filters for test_a are in force while it runs: not for test_b.
    pytester.makepyfile(
        PAIR.format(prelude="", mark_a='@pytest.mark.filterwarnings("error")', mark_b="")
    )
    assert not _forked_early(pytester, run)


def test_forked_at_its_turn_after_an_unknown_hook_in_pytests_process(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    # A hook of pytest's process that runs before each test could change what it sees.
    pytester.makeconftest(
        """
        import os
        def pytest_runtest_logstart(nodeid, location):
            os.environ["CURRENT"] = nodeid
        """
    )
    pytester.makepyfile(
        PAIR.format(prelude="import os", mark_a="", mark_b="")
        + "\ndef test_c():\n    assert os.environ['CURRENT'].endswith('test_c')\n"
    )
    result = run("--isolate-all", "--junitxml=junit.xml", "-o", "junit_family=xunit1", "-q")
    result.assert_outcomes(passed=3)
    times = _times(pytester)
    assert times["started"] >= times["ended"] - 0.05, times


def _two_files(pytester: pytest.Pytester, prelude: str = "", second: str = "test_2") -> None:
    first, rest = PAIR.format(prelude=prelude, mark_a="", mark_b="").split("def test_b")
    pytester.makepyfile(**{"test_1": first, second: "import os, time\n\ndef test_b" + rest})


def test_forked_early_into_the_next_file_of_the_same_directory(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    _two_files(pytester)  # from test_1.py to test_2.py: only pytest's bookkeeping
    assert _forked_early(pytester, run)


def test_forked_at_its_turn_in_another_directory(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.mkpydir("zz")  # collected after test_1.py
    _two_files(pytester, second="zz/test_2")
    assert not _forked_early(pytester, run)


def test_forked_at_its_turn_after_a_module_fixture_is_torn_down(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    prelude = "@pytest.fixture(scope='module', autouse=True)\ndef per_module():\n    yield"
    _two_files(pytester, prelude=prelude)
    assert not _forked_early(pytester, run)


def test_across_files_one_fork_server_and_each_test_in_its_own_module(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    # Test processes forked from a copy of pytest's process taken in test_1.py: each one
    # drops test_1.py from its setup state and sets up its own module, as pytest would.
    pytester.makeconftest(CHILDREN_SEEN)
    module = """
        import pytest

        @pytest.fixture(scope="module")
        def mod(request):
            return request.module.__name__

        @pytest.mark.parametrize("i", range(3))
        def test_in(request, i):
            assert request.getfixturevalue("mod") == __name__  # set up in the test process
            assert request.node.parent.name == __name__ + ".py"
        """
    pytester.makepyfile(test_1=module, test_2=module, test_3=module)
    run("--isolate-all", "-q").assert_outcomes(passed=9)
    seen = _children_seen(pytester)
    servers = {pid for pids, _ in seen for pid in pids}
    assert len(servers) == 1, seen


def test_shared_fixtures_and_module_state_are_the_same_as_without_it(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    pytester.makepyfile(
        """
        import pytest

        SEEN = []
        COUNT = {"setups": 0}

        @pytest.fixture(scope="class")
        def box():
            COUNT["setups"] += 1
            return {"setups": COUNT["setups"]}

        class TestOne:
            def test_first(self, box):
                SEEN.append("one")
                box["touched"] = True
                assert box["setups"] == 1

            def test_second(self, box):
                assert SEEN == [] and "touched" not in box and box["setups"] == 1

        class TestTwo:
            def test_third(self, box):
                assert SEEN == [] and box == {"setups": 2}
        """
    )
    run("--isolate-all", "-q").assert_outcomes(passed=3)
    run("--no-isolate", "-q").assert_outcomes(passed=1, failed=2)


def test_an_unused_early_process_leaves_nothing(pytester: pytest.Pytester, run: RunPytest) -> None:
    # -x: test_b's process was forked while test_a ran, and its turn never comes.
    pytester.makeconftest(
        """
        import psutil, pytest

        @pytest.hookimpl(trylast=True)
        def pytest_sessionfinish(session):
            me = psutil.Process()
            builder = "pytest_isolate.builder.main"
            left = [p for p in me.children() if builder not in " ".join(p.cmdline())]
            open("left.txt", "w").write(repr([(p.pid, p.status()) for p in left]))
        """
    )
    pytester.makepyfile(
        """
        import time

        def test_a():
            time.sleep(0.3)
            assert False

        def test_b():
            pass
        """
    )
    result = run("--isolate-all", "-q", "-x")
    result.assert_outcomes(failed=1)
    assert (pytester.path / "left.txt").read_text() == "[]"


def test_early_processes_come_from_one_fork_server_and_are_pytests_children(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    # Recorded in pytest's process after each test: its children outside any sandbox
    # (but the builder) and in one. The process forked early for the next test is there.
    pytester.makeconftest(CHILDREN_SEEN)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("i", range(10))
        def test_many(i):
            pass
        """
    )
    run("--isolate-all", "-q").assert_outcomes(passed=10)
    seen = _children_seen(pytester)
    assert len(seen) == 10
    # One server, started at the first process forked early (a busy machine may have no
    # sandbox ready for the first few), and kept.
    servers = {tuple(s) for s, _ in seen if s}
    assert len(servers) == 1 and len(next(iter(servers))) == 1, seen
    assert seen[-1][0], seen
    assert any(sandboxed for _, sandboxed in seen), seen  # the next one, waiting


def test_the_fork_server_is_replaced_after_a_test_in_pytests_process(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    # test_4's process is forked early, while test_3 runs: from a server started after
    # test_2 changed STATE in pytest's own process, not from the one test_1b came from.
    pytester.makepyfile(
        """
        import pytest

        STATE = {"n": 0}

        @pytest.mark.isolated
        def test_1a():
            pass

        @pytest.mark.isolated
        def test_1b():
            assert STATE["n"] == 0

        def test_2_in_pytests_process():
            STATE["n"] = 1

        @pytest.mark.isolated
        def test_3():
            assert STATE["n"] == 1

        @pytest.mark.isolated
        def test_4():
            assert STATE["n"] == 1
        """
    )
    run("-q").assert_outcomes(passed=5)
