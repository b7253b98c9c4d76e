"""End to end: the conditions a test (or the flaky-test hunt) may ask for, each checked
against the real kernel: the CPU cap's period, a cpuset, busy processes beside the test,
a shifted monotonic clock, random's seed."""

from __future__ import annotations

import os
import re
import time

import pytest

from conftest import RunPytest, needs_cgroup_v1, needs_root


def _values(output: str, name: str) -> list[float]:
    return [float(v) for v in re.findall(rf"^{name}=(\S+)$", output, re.MULTILINE)]


LONGEST_STALL = """
import time, pytest

def longest_stall(seconds):
    # The longest gap between two looks at the clock while spinning for ``seconds``.
    end = time.monotonic() + seconds
    last = time.monotonic()
    longest = 0.0
    while last < end:
        now = time.monotonic()
        longest = max(longest, now - last)
        last = now
    return longest

@pytest.mark.isolated(cpu=0.1, cpu_period="1s")
def test_long_period():
    print(f"\\nLONG={longest_stall(2.5):.3f}")

@pytest.mark.isolated(cpu=0.1)
def test_kernel_period():
    print(f"\\nSHORT={longest_stall(2.5):.3f}")
"""


@needs_cgroup_v1
def test_a_long_cpu_period_stalls_the_test_for_most_of_each_period(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    pytester.makepyfile(LONGEST_STALL)
    result = run("-s")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    (long,), (short,) = _values(out, "LONG"), _values(out, "SHORT")
    # 100 ms of CPU per 1 s period: stalls of up to 0.9 s; per 100 ms period, up to 0.09 s.
    assert long > 0.6, out
    assert short < 0.35, out


def test_a_quota_below_a_millisecond_is_refused_at_startup(run: RunPytest) -> None:
    result = run("--isolate-cpu", "0.01", "--isolate-cpu-period", "0.05")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--isolate-cpu and command line option --isolate-cpu-period: cpu=0.01 with "
         "cpu_period=0.05s gives 0.5ms of CPU per period*"]
    )  # fmt: skip


CPUSET = """
import os, subprocess, sys, pytest

@pytest.mark.isolated(cpuset="0")
def test_pinned():
    assert os.sched_getaffinity(0) == {0}
    code = "import os; print(sorted(os.sched_getaffinity(0)))"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "[0]"

@pytest.mark.isolated
def test_all_cpus():
    assert os.sched_getaffinity(0) == set(range(os.cpu_count()))

@pytest.mark.isolated(cpuset="4095")
def test_no_such_cpu():
    pass
"""


@needs_root
def test_a_cpuset_pins_the_test_and_its_children(pytester: pytest.Pytester, run: RunPytest) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs to tell one from all")
    pytester.makepyfile(CPUSET)
    result = run()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["@pytest.mark.isolated on test_a_cpuset_pins_the_test_and_its_children.py::"
         "test_no_such_cpu: invalid cpuset='4095' (CPU 4095 is not one pytest may run on "
         "here: 0-*); expected CPU numbers*"]
    )  # fmt: skip


def test_a_cpuset_on_the_command_line_is_checked_at_startup(run: RunPytest) -> None:
    result = run("--isolate-cpuset", "4000-4001")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: command line option --isolate-cpuset: invalid cpuset='4000-4001' (CPU "
         "4000-4001 is not one pytest may run on here: *"]
    )  # fmt: skip


NOISE = """
import os, time, pytest

def busy_orphans():
    found = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        state, ppid = rest.split()[:2]
        if comm == "sh" and ppid == "1":
            found += 1
    return found

@pytest.mark.isolated(noise=2, cpuset="0")
def test_noise():
    time.sleep(0.2)
    print(f"\\nBUSY={busy_orphans()}")
    # the test has no children of its own: the noise is the sandbox's pid 1's
    assert not [l for l in open(f"/proc/self/task/{os.getpid()}/children").read().split()]
    # one CPU shared with two spinning processes: a third of it, or so
    start, cpu0 = time.monotonic(), time.process_time()
    while time.monotonic() - start < 1.0:
        pass
    print(f"SHARE={(time.process_time() - cpu0) / (time.monotonic() - start):.2f}")

@pytest.mark.isolated
def test_quiet():
    print(f"\\nBUSY={busy_orphans()}")
"""


@needs_root
def test_noise_runs_busy_processes_beside_the_test_in_its_sandbox(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    pytester.makepyfile(NOISE)
    result = run("-s")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert _values(out, "BUSY") == [2.0, 0.0], out
    (share,) = _values(out, "SHARE")
    assert share < 0.6, out  # alone on its CPU it would get ~1.0


CLOCK = """
import os, time, pytest

HOST = float(os.environ["HOST_MONOTONIC"])

@pytest.mark.isolated(clock_offset="30d")
def test_shifted():
    shifted = time.monotonic() - 30 * 86400
    assert abs(shifted - HOST) < 120, (shifted, HOST)
    assert time.clock_gettime(time.CLOCK_BOOTTIME) > 30 * 86400
    # the wall clock is the host's
    assert abs(time.time() - float(os.environ["HOST_TIME"])) < 120

@pytest.mark.isolated(clock_offset=-(HOST - 5))
def test_just_booted():
    assert time.monotonic() < 120

@pytest.mark.isolated
def test_unshifted():
    assert abs(time.monotonic() - HOST) < 120
"""


@needs_root
def test_a_clock_offset_shifts_the_monotonic_clocks_only(
    pytester: pytest.Pytester, run: RunPytest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not os.path.exists("/proc/self/ns/time"):
        pytest.skip("no time namespaces in this kernel")
    monkeypatch.setenv("HOST_MONOTONIC", str(time.monotonic()))
    monkeypatch.setenv("HOST_TIME", str(time.time()))
    pytester.makepyfile(CLOCK)
    run().assert_outcomes(passed=3)


def test_a_clock_offset_that_would_make_the_clock_negative_says_so(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    if not os.path.exists("/proc/self/ns/time"):
        pytest.skip("no time namespaces in this kernel")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.isolated(clock_offset="-3000d")
        def test_too_far_back():
            pass
        """
    )
    result = run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["pytest-isolate could not run this test as asked: clock_offset=-2.592e+08: this host "
         "gives no time namespace with that offset (Numerical result out of range)*"]
    )  # fmt: skip
    assert "Traceback" not in result.stdout.str()


SEED = """
import random, pytest

@pytest.mark.isolated(seed=42)
def test_a():
    print(f"\\nA={random.random()}")

@pytest.mark.isolated(seed=42)
def test_b():
    print(f"\\nB={random.random()}")

@pytest.mark.isolated(seed=7)
def test_c():
    print(f"\\nC={random.random()}")
"""


@pytest.mark.parametrize("randomly", [False, True], ids=["plain", "pytest-randomly"])
def test_a_seed_fixes_random_in_the_test(
    pytester: pytest.Pytester, run: RunPytest, randomly: bool
) -> None:
    pytester.makepyfile(SEED)
    result = run("-s", *(["-p", "randomly", "--randomly-dont-reorganize"] if randomly else []))
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    (a,), (b,), (c,) = _values(out, "A"), _values(out, "B"), _values(out, "C")
    if not randomly:  # pytest-randomly reseeds per test, from its seed and the test's id
        assert a == b == random_after_seed(42)
        assert c == random_after_seed(7)
    assert c != a
    again = run("-s", *(["-p", "randomly", "--randomly-dont-reorganize"] if randomly else []))
    assert _values(again.stdout.str(), "A") == [a]  # the same seed, the same value


def random_after_seed(seed: int) -> float:
    import random

    return random.Random(seed).random()
