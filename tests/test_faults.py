"""Faults a sandbox must survive: each ends as a clear report, and nothing is left behind;
and kernel state outside the namespaces (keyrings, cgroups) a test must not carry out."""

from __future__ import annotations

import os

import pytest

from conftest import RunPytest, needs_cgroup_v1

pytestmark = needs_cgroup_v1


def test_misbehaving_tests_are_reported_and_cleaned_up(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    pytester.makepyfile(
        """
        import os, signal, sys, time, pytest

        @pytest.mark.isolated(mem="64M")
        def test_tmpfs_hog_is_an_oom_not_a_crash():
            chunk = b"x" * 2**20
            with open("/dev/shm/hog", "wb") as f:
                for _ in range(200):
                    f.write(chunk)
                    f.flush()

        @pytest.fixture
        def stopped_child():
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            yield
            os.kill(pid, signal.SIGSTOP)  # left stopped at teardown

        @pytest.mark.isolated
        def test_stopped_child_at_teardown(stopped_child):
            pass

        @pytest.mark.isolated
        def test_hundred_unreaped_children():
            for _ in range(100):
                if os.fork() == 0:
                    os._exit(0)
            time.sleep(0.2)  # 100 zombies of ours: the sandbox takes them

        @pytest.mark.isolated
        def test_fifty_megabytes_of_output():
            line = "y" * 1023 + "\\n"
            for _ in range(50 * 1024):
                sys.stdout.write(line)
            assert False, "show the output"

        @pytest.mark.isolated
        def test_report_bigger_than_the_pipe(record_property):
            record_property("big", "z" * (4 * 2**20))
            assert False, "q" * (2 * 2**20)

        def test_after():
            pass
        """
    )
    result = run("-q", "--junitxml=out.xml", timeout=300)
    result.assert_outcomes(passed=3, failed=3)
    out = result.stdout.str()
    assert "test_tmpfs_hog_is_an_oom_not_a_crash" in out
    result.stdout.fnmatch_lines(["*killed during call: out of memory*limit is 64.0 MiB*"])
    assert out.count("y" * 1023) >= 50 * 1024 - 10  # the whole 50 MB came back
    assert "q" * 1000 in out
    assert "Traceback" not in result.stderr.str()
    assert (pytester.path / "out.xml").stat().st_size > 4 * 2**20


KEYRINGS = """
import ctypes, os, pytest

libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long
SYS_ADD_KEY, SYS_KEYCTL = 248, 250  # x86-64
SESSION, KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_SEARCH = -3, 1, 10
# pytest's own session keyring (joined at collection), as pam_keyinit gives a login
assert libc.syscall(L(SYS_KEYCTL), L(KEYCTL_JOIN_SESSION_KEYRING),
                    b"pytest-isolate-test-session") > 0


def find(description):
    return libc.syscall(L(SYS_KEYCTL), L(KEYCTL_SEARCH), L(SESSION), b"user", description, L(0))


@pytest.mark.isolated
def test_adds_a_key():
    assert libc.syscall(L(SYS_ADD_KEY), b"user", b"pytest-isolate-secret", b"s3cret", L(6),
                        L(SESSION)) > 0
    assert find(b"pytest-isolate-secret") > 0  # its own, while it runs


@pytest.mark.isolated
def test_a_later_test_does_not_see_it():
    assert find(b"pytest-isolate-secret") == -1


def test_pytest_does_not_see_it():
    assert find(b"pytest-isolate-secret") == -1
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="keyctl(2) numbers for x86-64")
def test_session_keyring_is_the_tests_own(pytester: pytest.Pytester, run: RunPytest) -> None:
    """A key a test adds to its session keyring reaches neither later tests nor pytest."""
    pytester.makepyfile(test_keys=KEYRINGS)
    result = run("-v")
    result.assert_outcomes(passed=3)
