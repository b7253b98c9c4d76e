"""Faults a sandbox must survive: each ends as a clear report, and nothing is left behind."""

from __future__ import annotations

import uuid

import psutil
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


CLONE_PARENT = """
import ctypes, os, platform, signal, pytest

libc = ctypes.CDLL(None, use_errno=True)
CLONE = {{"x86_64": 56, "aarch64": 220}}[platform.machine()]
CLONE_PARENT, CLONE_NEWPID = 0x00008000, 0x20000000

@pytest.mark.isolated
@pytest.mark.parametrize("flags", [CLONE_PARENT, CLONE_PARENT | CLONE_NEWPID] * 5)
def test_child_of_pytest(flags):
    pid = libc.syscall(CLONE, flags | signal.SIGCHLD, 0, 0, 0, 0)
    if pid == 0:  # pytest's child, not ours, in our sandbox (or a namespace below it)
        os.execv("/bin/sleep", ["sleep", "{tag}"])
    assert pid > 0

def test_in_pytest():
    pass

@pytest.mark.isolated
def test_isolated_after():
    pass
"""


def test_clone_parent_children_do_not_hang_the_session(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    """A test's clone(CLONE_PARENT) child is pytest's: pytest reaps it when its sandbox is
    killed, or that sandbox never finishes dying and the session hangs."""
    tag = f"1000.{uuid.uuid4().int % 10**12:012d}"
    pytester.makepyfile(CLONE_PARENT.format(tag=tag))
    result = run("-q", timeout=60)
    result.assert_outcomes(passed=12)
    assert _processes_with(tag) == []


def _processes_with(tag: str) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if tag in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:  # gone, or a zombie: no command line
            pass
    return found
