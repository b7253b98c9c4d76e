"""End to end: pytest-isolate as a drop-in for real test suites.

Other plugins (pytest-xdist, pytest-cov, Hypothesis, pytest-timeout,
pytest-rerunfailures, pytest-repeat, pytest-randomly), fixtures of every scope, and
pytest's own options give the same results with ``--isolate-all`` as without.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import RunPytest, needs_cgroup_v1

pytestmark = needs_cgroup_v1


def _outcomes(result: pytest.RunResult) -> dict[str, int]:
    return {k: v for k, v in result.parseoutcomes().items() if k not in ("warning", "warnings")}


# -- pytest-xdist ---------------------------------------------------------------------------
XDIST_SUITE = """
import os, socket, time, pytest

def test_pass(): assert 1

def test_fail(): assert 0

@pytest.mark.skip(reason="no")
def test_skip(): pass

@pytest.mark.xfail(strict=True)
def test_xfail(): assert 0

@pytest.mark.parametrize("n", range(4))
def test_isolated_on_every_worker(n):
    assert socket.gethostname() == "isolated"
    assert os.getpid() == 2
    with open("/etc/pytest-isolate-xdist-leak", "w") as f:
        f.write("x")
"""

PORT_SUITE = """
import os, socket, time, pytest

SHARED = {shared!r}

def _same_port(group):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    s.bind(("127.0.0.1", 47321))
    s.listen()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "none")
    with open(os.path.join(SHARED, group), "w") as f:
        f.write(worker)
    end = time.monotonic() + 60
    while len(os.listdir(SHARED)) < 2:  # both tests hold the port at the same time
        assert time.monotonic() < end, "the other test never bound the port"
        time.sleep(0.05)
    s.close()

@pytest.mark.xdist_group("a")
def test_port_a(): _same_port("a")

@pytest.mark.xdist_group("b")
def test_port_b(): _same_port("b")
"""


def test_xdist_gives_the_same_outcomes_and_isolates_on_every_worker(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    pytester.makepyfile(test_suite=XDIST_SUITE)
    serial = run("--isolate-all", "-n", "0")
    parallel = run("--isolate-all", "-n", "2")
    expected = {"passed": 5, "failed": 1, "skipped": 1, "xfailed": 1}
    assert _outcomes(serial) == expected, serial.stdout.str()
    assert _outcomes(parallel) == expected, parallel.stdout.str()
    parallel.stdout.fnmatch_lines(["*2 workers*"])
    assert not Path("/etc/pytest-isolate-xdist-leak").exists()


def test_xdist_workers_bind_the_same_port_at_once(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    shared = pytester.mkdir("shared")
    pytester.makepyfile(test_port=PORT_SUITE.format(shared=str(shared)))
    result = run("--isolate-all", "-n", "2", "--dist", "loadgroup", "--isolate-share", str(shared))
    assert _outcomes(result) == {"passed": 2}, result.stdout.str()
    workers = {(shared / name).read_text() for name in ("a", "b")}
    assert workers == {"gw0", "gw1"}


# -- pytest-cov -----------------------------------------------------------------------------
COV_LIB = """
def sign(x):
    if x > 0:
        return "pos"
    elif x < 0:
        return "neg"
    return "zero"


def used():
    return 1


def unused():
    return 2
"""

COV_TESTS = """
import mylib

def test_pos(): assert mylib.sign(1) == "pos"
def test_neg(): assert mylib.sign(-1) == "neg"
def test_used(): assert mylib.used() == 1
"""


def _covered(pytester: pytest.Pytester, run: RunPytest, *args: str) -> dict[str, object]:
    report = pytester.path / "cov.json"
    report.unlink(missing_ok=True)
    result = run("--cov=mylib", f"--cov-report=json:{report}", *args)
    assert _outcomes(result) == {"passed": 3}, result.stdout.str()
    data = json.loads(report.read_text())["files"]["mylib.py"]
    assert not list(pytester.path.glob(".coverage.*")), "data files left behind"
    return {"executed": data["executed_lines"], "missing": data["missing_lines"]}


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_coverage_is_the_same_as_a_plain_run(
    pytester: pytest.Pytester, run: RunPytest, xdist: tuple[str, ...]
) -> None:
    pytester.makepyfile(mylib=COV_LIB, test_cov=COV_TESTS)
    before = set(Path(tempfile.gettempdir()).glob("pytest-isolate-cov-*"))
    plain = _covered(pytester, run, *xdist)
    isolated = _covered(pytester, run, "--isolate-all", *xdist)
    assert set(Path(tempfile.gettempdir()).glob("pytest-isolate-cov-*")) <= before
    assert isolated == plain
    assert plain["missing"] == [6, 14]  # "zero" and unused(): the rest ran in sandboxes


# -- Hypothesis, basetemp and --isolate-share -------------------------------------------------
HYPOTHESIS_SUITE = """
import os
from hypothesis import Phase, given, settings, strategies as st

REPLAY_ONLY = os.environ.get("REPLAY_ONLY") == "1"
settings.load_profile("default")  # where $CI is set, Hypothesis' "ci" profile has no database

@settings(phases=[Phase.reuse] if REPLAY_ONLY else list(Phase), deadline=None)
@given(st.integers(min_value=0, max_value=10**6))
def test_finds_a_counterexample(x):
    assert x < 1000
"""


def test_hypothesis_replays_a_failure_found_in_a_sandbox(
    pytester: pytest.Pytester, run: RunPytest, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_hyp=HYPOTHESIS_SUITE)
    first = run("--isolate-all")
    assert _outcomes(first) == {"failed": 1}, first.stdout.str()
    first.stdout.fnmatch_lines(["*x=1000*"])
    assert any((pytester.path / ".hypothesis" / "examples").rglob("*"))
    # Only the example database: no generation. It fails only if the example was kept.
    monkeypatch.setenv("REPLAY_ONLY", "1")
    again = run("--isolate-all")
    assert _outcomes(again) == {"failed": 1}, again.stdout.str()
    again.stdout.fnmatch_lines(["*x=1000*"])


TMP_SUITE = """
def test_keeps_its_tmp_path(tmp_path):
    (tmp_path / "result.txt").write_text("kept")
"""


@pytest.mark.parametrize("mode", [(), ("--isolate-all",)], ids=["plain", "isolated"])
def test_basetemp_keeps_tmp_path_dirs(
    pytester: pytest.Pytester, run: RunPytest, mode: tuple[str, ...]
) -> None:
    pytester.makepyfile(test_tmp=TMP_SUITE)
    base = pytester.path / "bt"
    result = run(f"--basetemp={base}", *mode)
    assert _outcomes(result) == {"passed": 1}
    assert (base / "test_keeps_its_tmp_path0" / "result.txt").read_text() == "kept"


SHARE_SUITE = """
def test_writes_results(): open({path!r}, "w").write("from the sandbox")
def test_writes_elsewhere(): open({other!r}, "w").write("vanishes")
"""


def test_isolate_share_makes_writes_reach_the_host(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    results = pytester.mkdir("results")
    other = pytester.mkdir("other")
    pytester.makepyfile(
        test_share=SHARE_SUITE.format(path=str(results / "out.txt"), other=str(other / "x"))
    )
    pytester.makeini("[pytest]\nisolate_share = results\n")
    result = run("--isolate-all")
    assert _outcomes(result) == {"passed": 2}
    assert (results / "out.txt").read_text() == "from the sandbox"
    assert not (other / "x").exists()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("cli", "ERROR: command line option --isolate-share: invalid share='nowhere' "),
        ("ini", "ERROR: ini option isolate_share: invalid share="),
    ],
)
def test_bad_isolate_share_names_its_source(
    pytester: pytest.Pytester, run: RunPytest, where: str, message: str
) -> None:
    pytester.makepyfile("def test_x(): pass")
    if where == "cli":
        result = run("--isolate-all", "--isolate-share", "nowhere")
    else:
        pytester.makeini("[pytest]\nisolate_share = nowhere\n")
        result = run("--isolate-all")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"{message}*does not exist); expected an existing directory*"])


# -- fixture lifetimes ----------------------------------------------------------------------
FIXTURE_CONFTEST = """
import os, socket, pytest

LOG = os.path.join(os.path.dirname(__file__), "fixture-log.txt")
HOST_PID = os.getpid()

def note(text):
    with open(LOG, "a") as f:
        f.write(text + "\\n")

@pytest.fixture(scope="session")
def sess():
    note("session setup")
    yield {"value": 1, "pid": os.getpid()}
    note("session teardown")

@pytest.fixture(scope="package")
def pkg():
    note("package setup")
    yield ["package"]
    note("package teardown")

@pytest.fixture(scope="module")
def mod(sess):
    note("module setup")
    yield {"items": []}
    note("module teardown")

@pytest.fixture(scope="class")
def klass():
    note("class setup")
    yield set()
    note("class teardown")

@pytest.fixture
def func():
    # Function-scoped fixtures run in the sandbox.
    yield (socket.gethostname(), os.getpid())
"""

FIXTURE_TESTS = """
def test_one(sess, pkg, mod, func):
    assert sess["value"] == 1 and mod["items"] == [] and pkg == ["package"]
    sess["value"] += 1  # changes stay in this test's sandbox
    mod["items"].append(1)
    pkg.append("changed")

def test_two(sess, mod, func):
    assert sess["value"] == 1 and mod["items"] == []

class TestClass:
    def test_three(self, klass, sess, pkg):
        assert klass == set() and pkg == ["package"]
        klass.add(3)

    def test_four(self, klass, mod):
        assert klass == set()
"""

FIXTURE_OTHER = """
def test_five(mod, sess, func):
    assert mod["items"] == []
    if os.environ.get("EXPECT_SANDBOX") == "1":
        assert func == ("isolated", 2)
        assert sess["pid"] != os.getpid()  # set up in pytest's process
import os
"""

EXPECTED_LOG = [
    "session setup",
    "package setup",
    "module setup",
    "class setup",
    "class teardown",
    "module teardown",
    "module setup",
    "module teardown",
    "package teardown",
    "session teardown",
]


def _fixture_project(pytester: pytest.Pytester) -> Path:
    pkg = pytester.mkpydir("pkg")
    (pkg / "conftest.py").write_text(FIXTURE_CONFTEST)
    (pkg / "test_a.py").write_text(FIXTURE_TESTS)
    (pkg / "test_b.py").write_text(FIXTURE_OTHER)
    return pkg / "fixture-log.txt"


def test_higher_scoped_fixtures_are_set_up_and_torn_down_once(
    pytester: pytest.Pytester, run: RunPytest, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _fixture_project(pytester)
    monkeypatch.setenv("EXPECT_SANDBOX", "1")
    result = run("--isolate-all", "-p", "no:randomly")
    assert _outcomes(result) == {"passed": 5}, result.stdout.str()
    assert log.read_text().splitlines() == EXPECTED_LOG


def test_higher_scoped_fixtures_leak_changes_without_isolation(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    # The same suite in-process: the same setups and teardowns, but the changes leak.
    log = _fixture_project(pytester)
    result = run()
    assert _outcomes(result) == {"passed": 3, "failed": 2}, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "FAILED pkg/test_a.py::test_two - assert (2 == 1)*",
            "FAILED pkg/test_a.py::TestClass::test_three*",
        ]
    )
    assert log.read_text().splitlines() == EXPECTED_LOG


FAILING_FIXTURES = """
import pytest

@pytest.fixture(scope="module")
def broken():
    raise RuntimeError("module fixture broke")

@pytest.fixture(scope="module")
def bad_teardown():
    yield
    raise RuntimeError("module teardown broke")

def test_a(broken): pass
def test_b(broken): pass
def test_c(bad_teardown): pass
"""


@pytest.mark.parametrize("mode", [(), ("--isolate-all",)], ids=["plain", "isolated"])
def test_higher_scoped_fixture_errors_are_reported_as_in_a_plain_run(
    pytester: pytest.Pytester, run: RunPytest, mode: tuple[str, ...]
) -> None:
    pytester.makepyfile(test_errors=FAILING_FIXTURES)
    result = run(*mode)
    assert _outcomes(result) == {"passed": 1, "errors": 3}, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_a*",
            "*RuntimeError: module fixture broke",
            "*ERROR at setup of test_b*",
            "*ERROR at teardown of test_c*",
            "*RuntimeError: module teardown broke",
        ]
    )


SERVER_SUITE = """
import socket, threading, pytest

@pytest.fixture(scope="session")
def server():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    def serve():
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            conn.sendall(b"hello")
            conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield s.getsockname()[1]
    s.close()

def _fetch(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        return c.recv(5)

def test_only_the_forking_thread(server):
    assert threading.active_count() == {threads}

def test_private_network_cannot_reach_it(server):
    with pytest.raises(ConnectionRefusedError):
        _fetch(server)

@pytest.mark.isolated(net="host")
def test_host_network_reaches_it(server):
    assert _fetch(server) == b"hello"
"""


def test_a_session_server_is_reachable_only_with_net_host(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    pytester.makepyfile(test_server=SERVER_SUITE.format(threads=1))
    result = run("--isolate-all", "-W", "error")
    assert _outcomes(result) == {"passed": 3}, result.stdout.str()
    assert "warning" not in result.stdout.str().lower()


THREAD_SUITE = """
import threading, pytest

@pytest.fixture(scope="session")
def worker():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    yield thread
    stop.set()

@pytest.mark.parametrize("i", range(3))
def test_with_a_thread_in_pytest(worker, i):
    assert threading.active_count() == 1
"""


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the warning is new in Python 3.12")
def test_no_multi_threaded_fork_warning(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(test_threads=THREAD_SUITE)
    result = run("--isolate-all")
    assert result.parseoutcomes() == {"passed": 3}, result.stdout.str()
    assert "multi-threaded" not in result.stdout.str()


def test_isolate_net_host_on_the_command_line(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(test_server=SERVER_SUITE.format(threads=1))
    result = run("--isolate-all", "--isolate-net", "host")
    # Every test now shares the host's network: the private-network test fails.
    assert _outcomes(result) == {"passed": 2, "failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["FAILED *test_private_network_cannot_reach_it*"])


def test_bad_net_value_names_its_source(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.isolated(net="outside")
        def test_x(): pass
        """
    )
    result = run()
    source = "@pytest.mark.isolated on test_bad_net_value_names_its_source.py::test_x"
    result.stdout.fnmatch_lines([f"*{source}: invalid net='outside'; expected 'private' *'host'*"])
    bad = run("--isolate-all", "--isolate-net", "wide")
    bad.stderr.fnmatch_lines(["ERROR: command line option --isolate-net: invalid net='wide'*"])


# -- pytest-timeout, faulthandler_timeout, pytest-rerunfailures -----------------------------
TIMEOUT_SUITE = """
import time, pytest

@pytest.mark.timeout(1)
def test_pytest_timeout_fires_inside():
    time.sleep(30)

@pytest.mark.timeout(30)
@pytest.mark.isolated(timeout=1)
def test_ours_fires_around():
    time.sleep(30)

@pytest.mark.timeout(5)
def test_fast():
    pass
"""


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_pytest_timeout_runs_inside_the_sandbox(
    pytester: pytest.Pytester, run: RunPytest, method: str
) -> None:
    pytester.makepyfile(test_timeouts=TIMEOUT_SUITE)
    result = run("--isolate-all", f"--timeout-method={method}", timeout=90)
    assert _outcomes(result) == {"passed": 1, "failed": 2}, result.stdout.str()
    out = result.stdout.str()
    assert "ran past its timeout of 1 s" in out
    if method == "signal":
        assert "Failed: Timeout (>1.0s) from pytest-timeout" in out
    else:  # the thread method dumps the stacks and ends the process: the test process only
        assert re.search(r"\++ Timeout \++", out)
        assert "exited with status 1 during call" in out
    result.stdout.fnmatch_lines(["FAILED *test_pytest_timeout_fires_inside*"])


def test_faulthandler_timeout_never_hangs(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import time
        def test_slow(): time.sleep(1.5)
        def test_fast(): pass
        """
    )
    result = run("--isolate-all", "-o", "faulthandler_timeout=0.5", timeout=60)
    assert _outcomes(result) == {"passed": 2}, result.stdout.str()


RERUN_SUITE = """
import os, pytest

COUNTER = {counter!r}

def _attempt():
    with open(COUNTER, "a") as f:
        f.write("x")
    return len(open(COUNTER).read())

@pytest.mark.flaky(reruns=3)
def test_flaky():
    n = _attempt()
    # A fresh sandbox per attempt: what the last attempt wrote to /tmp is gone.
    assert not os.path.exists("/tmp/pytest-isolate-rerun-marker")
    open("/tmp/pytest-isolate-rerun-marker", "w").close()
    assert os.getpid() == 2
    assert n >= 3

@pytest.mark.flaky(reruns=3, only_rerun=["ValueError"])
def test_not_rerun_for_other_errors():
    raise KeyError("no rerun")
"""


def test_rerunfailures_reruns_each_attempt_in_a_fresh_sandbox(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    shared = pytester.mkdir("shared")
    counter = shared / "attempts"
    pytester.makepyfile(test_rerun=RERUN_SUITE.format(counter=str(counter)))
    result = run("--isolate-all", "--isolate-share", str(shared))
    assert _outcomes(result) == {"passed": 1, "failed": 1, "rerun": 2}, result.stdout.str()
    assert counter.read_text() == "xxx"
    assert not Path("/tmp/pytest-isolate-rerun-marker").exists()


def test_rerunfailures_settings_not_applied_are_said_once_and_conditions_apply(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.flaky(reruns=2, condition=False)
        def test_condition_false_is_not_rerun():
            assert False

        @pytest.mark.flaky(reruns=1, condition="True")
        def test_condition_true_is_rerun():
            assert False

        @pytest.mark.flaky(reruns=1, condition=lambda *args: True)
        def test_callable_condition():
            assert False
        """
    )
    result = run("--isolate-all", "--fail-on-flaky", "-W", "default::pytest.PytestWarning")
    assert _outcomes(result) == {"failed": 3, "rerun": 2}, result.stdout.str()
    out = result.stdout.str()
    assert out.count("pytest-isolate: not applied to isolated tests yet") == 1, out
    assert (
        "(pytest-rerunfailures): --fail-on-flaky; the callable condition of "
        "@pytest.mark.flaky on test_rerunfailures_settings_not_applied_are_said_once_and_"
        "conditions_apply.py::test_callable_condition. Run those tests without isolation"
    ) in out.replace("\n", "")


def test_rerunfailures_still_reruns_tests_that_are_not_isolated(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    shared = pytester.mkdir("shared")
    counter = shared / "attempts"
    pytester.makepyfile(
        f"""
        import pytest
        @pytest.mark.flaky(reruns=2)
        def test_flaky():
            with open({str(counter)!r}, "a") as f:
                f.write("x")
            assert len(open({str(counter)!r}).read()) >= 2
        """
    )
    result = run()
    assert _outcomes(result) == {"passed": 1, "rerun": 1}, result.stdout.str()


REPEAT_SUITE = """
import random

def test_a(): assert random.random() < 2
def test_b(): assert 1
def test_c(): assert 0
"""


@pytest.mark.parametrize(
    "plugin_args",
    [("--count", "3"), ("-p", "randomly", "--randomly-seed=1234", "--count", "2")],
    ids=["repeat", "randomly"],
)
def test_repeat_and_randomly_give_the_same_outcomes(
    pytester: pytest.Pytester, run: RunPytest, plugin_args: tuple[str, ...]
) -> None:
    pytester.makepyfile(test_rep=REPEAT_SUITE)
    plain = run(*plugin_args)
    isolated = run("--isolate-all", *plugin_args)
    assert _outcomes(plain) == _outcomes(isolated)
    count = int(plugin_args[plugin_args.index("--count") + 1])
    assert _outcomes(isolated) == {"passed": 2 * count, "failed": count}
    if "randomly" in plugin_args:
        assert "Using --randomly-seed=1234" in isolated.stdout.str()


# -- pytest's own options: the same both ways ----------------------------------------------
OPTIONS_SUITE = """
import logging, sys, warnings, pytest

def test_prints():
    print("visible-with-s")

def test_caplog(caplog):
    logging.getLogger("x").warning("logged-line")
    assert caplog.messages == ["logged-line"]

def test_capsys(capsys):
    print("captured-by-capsys")
    assert capsys.readouterr().out == "captured-by-capsys\\n"

def test_warns():
    warnings.warn(UserWarning("a user warning"))

@pytest.mark.filterwarnings("ignore::pytest.PytestExperimentalApiWarning")
def test_xml_attribute(record_xml_attribute):
    record_xml_attribute("owner", "team-a")

def test_tee_fails():
    print("tee-output")
    assert 0
"""


@pytest.mark.parametrize("mode", [(), ("--isolate-all",)], ids=["plain", "isolated"])
def test_pytest_options_behave_the_same(
    pytester: pytest.Pytester, run: RunPytest, mode: tuple[str, ...]
) -> None:
    pytester.makepyfile(test_opts=OPTIONS_SUITE)
    normal = run(*mode)
    assert _outcomes(normal) == {"passed": 5, "failed": 1}
    normal.stdout.fnmatch_lines(["*Captured stdout call*", "tee-output", "*a user warning*"])
    assert "visible-with-s" not in normal.stdout.str()

    shown = run("-s", *mode)
    assert "visible-with-s" in shown.stdout.str()
    assert "captured-by-capsys" not in shown.stdout.str()

    tee = run("--capture=tee-sys", *mode)
    # The source line in the traceback, the live output and the captured section.
    assert tee.stdout.str().count("tee-output") == 3

    strict = run("-W", "error::UserWarning", *mode)
    assert _outcomes(strict) == {"passed": 4, "failed": 2}
    strict.stdout.fnmatch_lines(["FAILED *test_warns - UserWarning: a user warning"])

    xml = pytester.path / "junit.xml"
    run(f"--junitxml={xml}", "-o", "junit_family=xunit1", *mode)
    case = ET.parse(xml).getroot().find(".//testcase[@name='test_xml_attribute']")
    assert case is not None and case.get("owner") == "team-a"


@pytest.mark.parametrize("mode", [(), ("--isolate-all",)], ids=["plain", "isolated"])
def test_last_failed_and_failed_first(pytester: pytest.Pytester, mode: tuple[str, ...]) -> None:
    pytester.makepyfile(
        test_lf="def test_ok(): pass\ndef test_bad(): assert 0\ndef test_ok2(): pass\n"
    )

    def run_with_cache(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess("-p", "no:randomly", "-v", *mode, *args)

    assert _outcomes(run_with_cache()) == {"passed": 2, "failed": 1}
    last = run_with_cache("--lf")
    assert _outcomes(last) == {"failed": 1}
    last.stdout.fnmatch_lines(["run-last-failure: rerun previous 1 failure*"])
    first = run_with_cache("--ff")
    lines = [line for line in first.stdout.lines if re.match(r"test_lf.py::\w+ ", line)]
    assert lines[0].startswith("test_lf.py::test_bad ")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--isolate-all", "--pdb"), "--pdb"),
        (("--trace",), "--trace"),  # a marked test is enough
    ],
)
def test_debuggers_are_refused_with_what_to_do(
    pytester: pytest.Pytester, run: RunPytest, args: tuple[str, ...], option: str
) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.isolated\ndef test_x(): pass\n")
    result = run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: pytest-isolate: {option} cannot stop in an isolated test*add --no-isolate*"]
    )
    allowed = run("--no-isolate", "--pdb")
    assert _outcomes(allowed) == {"passed": 1}
