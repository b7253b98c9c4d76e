"""Faults a sandbox must survive: each ends as a clear report, and nothing is left behind."""

from __future__ import annotations

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
