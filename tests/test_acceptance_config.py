"""End to end: marker, command line and ini values; precedence; clear errors for bad input."""

from __future__ import annotations

import pytest

from conftest import RunPytest, needs_cgroup_v1, needs_root

SPEC_PROBE = """
import os, socket, pytest

def limits():
    with open("/proc/self/cgroup") as f:
        groups = dict(line.strip().split(":", 2)[1:] for line in f)
    return groups

@pytest.mark.isolated(hostname="from-marker")
def test_marker_wins():
    assert socket.gethostname() == "from-marker"

def test_default_hostname():
    assert socket.gethostname() == os.environ["EXPECT_HOSTNAME"]
"""


@needs_root
@pytest.mark.parametrize(
    ("args", "ini", "expected"),
    [
        (["--isolate-all"], "", "isolated"),
        (
            ["--isolate-all", "--isolate-hostname=from-cli"],
            "isolate_hostname = from-ini",
            "from-cli",
        ),
        (["--isolate-all"], "isolate_hostname = from-ini", "from-ini"),
        ([], "isolate_all = true\nisolate_hostname = from-ini", "from-ini"),
    ],
)
def test_precedence_marker_cli_ini(
    pytester: pytest.Pytester, run: RunPytest, monkeypatch: pytest.MonkeyPatch,
    args: list[str], ini: str, expected: str,
) -> None:  # fmt: skip
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(SPEC_PROBE)
    monkeypatch.setenv("EXPECT_HOSTNAME", expected)
    run(*args).assert_outcomes(passed=2)


@needs_root
def test_no_isolate_runs_everything_in_process(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.isolated(mem="64M")
        def test_marked():
            assert os.getpid() != 2
        """
    )
    pytester.makeini("[pytest]\nisolate_all = true\nisolate_mem = 1G\n")
    result = run("--no-isolate")  # overrides the ini file: how one debugs such a suite
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["isolate: off (--no-isolate)"])


@needs_cgroup_v1
def test_cli_defaults_apply_to_every_isolated_test(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    pytester.makepyfile(
        """
        import pytest

        def cap(controller, name):
            with open("/proc/self/cgroup") as f:
                for line in f:
                    _, ctrls, path = line.strip().split(":", 2)
                    if controller in ctrls.split(","):
                        return path
            raise AssertionError(controller)

        @pytest.mark.isolated
        def test_in_own_cgroups():
            assert "/pytest-isolate/" in cap("memory", "memory")
            assert "/pytest-isolate/" in cap("pids", "pids")

        @pytest.mark.isolated(mem=None)
        def test_marker_none_lifts_the_default():
            bytearray(100 * 2**20)
        """
    )
    result = run("--isolate-mem=64MiB", "--isolate-pids=100", "--isolate-cpu=1.5")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*defaults cpu=1.5 mem=67108864 pids=100 timeout=None*"])


BAD_MARKERS = [
    ("cpu=0", "invalid cpu=0 (must be greater than 0); expected a number of CPUs > 0"),
    ("cpu='lots'", "invalid cpu='lots'; expected a number of CPUs > 0"),
    (
        "mem='12 parsecs'",
        "invalid mem='12 parsecs'; expected bytes as an int, or a string like '128M'",
    ),
    ("pids=-1", "invalid pids=-1 (must be at least 1); expected an int >= 1"),
    ("timeout=0", "invalid timeout=0 (must be greater than 0); expected seconds as a number > 0"),
    ("cpu=1e308", "invalid cpu=1e+308 (must be at most 8192; None for no cap); expected a number"),
    (
        "timeout=3e6",
        "invalid timeout=3000000.0 (must be at most 604800 (a week); None for no timeout); "
        "expected seconds",
    ),
    ("hostname='no spaces'", "invalid hostname='no spaces'; expected a hostname"),
    ("memory='1G'", "unknown argument memory; accepted: cpu, mem, pids, timeout, hostname, net"),
    ("0.5", "positional arguments are not accepted (got 0.5); use keyword arguments"),
]


@needs_root
def test_bad_marker_fails_only_that_test(pytester: pytest.Pytester, run: RunPytest) -> None:
    lines = ["import pytest"]
    for i, (args, _) in enumerate(BAD_MARKERS):
        lines += ["", f"@pytest.mark.isolated({args})", f"def test_bad_{i}():", "    pass"]
    lines += ["", "@pytest.mark.isolated", "def test_good():", "    pass"]
    lines += ["", "def test_plain():", "    pass"]
    pytester.makepyfile("\n".join(lines) + "\n")
    result = run()
    result.assert_outcomes(passed=2, errors=len(BAD_MARKERS))
    for i, (_, message) in enumerate(BAD_MARKERS):
        result.stdout.fnmatch_lines(
            [
                f"*@pytest.mark.isolated on test_bad_marker_fails_only_that_test.py::"
                f"test_bad_{i}: {message}*"
            ]
        )
    assert "Traceback" not in result.stdout.str()
    assert "pytest_isolate" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--isolate-mem=lots"], "", "command line option --isolate-mem: invalid mem='lots'"),
        (
            ["--isolate-cpu=0"],
            "",
            "command line option --isolate-cpu: invalid cpu='0' (must be greater than 0)",
        ),
        (["--isolate-pids=1.5"], "", "command line option --isolate-pids: invalid pids='1.5'"),
        (
            ["--isolate-cpu", "1e12"],
            "",
            "command line option --isolate-cpu: invalid cpu='1e12' (must be at most 8192; None "
            "for no cap); expected",
        ),
        (
            ["--isolate-timeout=3e6"],
            "",
            "command line option --isolate-timeout: invalid timeout='3e6' (must be at most 604800",
        ),
        ([], "isolate_timeout = soon", "ini option isolate_timeout: invalid timeout='soon'"),
        (
            [],
            "isolate_all = maybe",
            "ini option isolate_all: invalid value 'maybe'; expected true or false",
        ),
        ([], "isolate_pids = 2**80", "ini option isolate_pids: invalid pids='2**80'"),
        (
            ["--isolate-all", "--no-isolate", "--isolate-mem=1G"],
            "",
            "command line options --isolate-all, --isolate-mem and --no-isolate contradict "
            "each other*pass one or the other",
        ),
    ],
)
def test_bad_option_or_ini_is_a_usage_error(
    pytester: pytest.Pytester, run: RunPytest, args: list[str], ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_x(): pass\n")
    result = run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*{message}*expected*"]
        if "invalid" in message and "expected" not in message
        else [f"*{message}*"]
    )
