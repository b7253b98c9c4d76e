"""End to end: nothing leaks, Ctrl-C cleans up, and a killed run is swept by the next."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from conftest import RunPytest, needs_cgroup_v1
from pytest_isolate.controller.builder_client import BUILDER_MODULE

pytestmark = needs_cgroup_v1

CGROUP_GLOB = "/sys/fs/cgroup/*/pytest-isolate/*"


def _our_cgroups() -> set[str]:
    return {d for d in glob.glob(CGROUP_GLOB) if os.path.isdir(d)}


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(" ".join(line.split()[3:5]) for line in f)


def _processes_with(tag: str) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if tag in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:  # gone, or a zombie: no command line
            pass
    return found


def test_300_isolated_tests_leave_nothing_behind(pytester: pytest.Pytester, run: RunPytest) -> None:
    tag = f"1000.{uuid.uuid4().int % 10**12:012d}"
    pytester.makepyfile(
        f"""
        import os, subprocess, pytest, psutil

        FDS = {{}}

        def fds():
            # Ready sandboxes (at most 4, built ahead) are held as a pidfd of their init,
            # their user namespace and the cgroup files to join: those come and go;
            # nothing else may.
            out, lease_fds = [], 0
            for fd in os.listdir("/proc/self/fd"):
                try:
                    target = os.readlink(f"/proc/self/fd/{{fd}}")
                except OSError:
                    continue
                if target == "anon_inode:[pidfd]" or target.startswith("user:") or (
                    target.endswith("/tasks")
                ):
                    lease_fds += 1
                else:
                    out.append((fd, target))
            assert lease_fds <= 4 * 6, lease_fds
            return sorted(out)

        @pytest.mark.isolated
        def test_0_warm_up():
            pass

        def test_1_record():
            FDS["before"] = fds()
            (builder,) = psutil.Process().children()  # owns the cgroups: PID.STARTTIME/N
            open("owner.pid", "w").write(str(builder.pid))

        @pytest.mark.isolated
        @pytest.mark.parametrize("i", range(300))
        def test_2_many(i):
            # a daemon, an orphan, a zombie, some memory and an open file per test
            subprocess.Popen(["sleep", "{tag}"], start_new_session=True)
            if os.fork() == 0:
                os._exit(0)
            open(f"/tmp/leak-{{i}}", "w").write("x" * 10000)

        def test_3_check():
            assert fds() == FDS["before"]
            me = psutil.Process()
            children = me.children()
            assert len(children) == 1, children  # only the sandbox builder
            assert children[0].status() != psutil.STATUS_ZOMBIE
            spare = children[0].children()
            assert len(spare) <= 4, spare  # the next sandboxes, built ahead
        """
    )
    mounts_before = _mounts()
    result = run("-q", timeout=300)
    result.assert_outcomes(passed=303)
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert _processes_with(tag) == []
    assert _mounts() == mounts_before
    # Only this run's own cgroups: other runs on the machine may come and go meanwhile.
    owner = (pytester.path / "owner.pid").read_text()
    assert glob.glob(f"/sys/fs/cgroup/*/pytest-isolate/{owner}.*") == []
    assert not glob.glob("/tmp/leak-*")


# Python keeps SIGINT ignored if it starts that way (as under `nohup cmd &` or any
# non-interactive shell's background job): Ctrl-C, which these tests send, must reach it.
_MAIN = (
    "import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.exit(pytest.console_main())"
)
# pytest-randomly (a test extra) would reorder the tests.
_PYTEST = (sys.executable, "-c", _MAIN, "-p", "no:cacheprovider", "-p", "no:randomly", "-s")


def _start(pytester: pytest.Pytester, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*_PYTEST, *args],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float = 60) -> list[str]:
    assert proc.stdout is not None
    lines = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} not seen in {lines}")


SLEEPER = """
import subprocess, sys, time, pytest

@pytest.mark.isolated
def test_sleeps():
    subprocess.Popen(["sleep", "{tag}"])
    print("sandbox running", flush=True)
    time.sleep(60)

def test_after():
    pass
"""


def test_ctrl_c_kills_the_sandbox_and_removes_cgroups(pytester: pytest.Pytester) -> None:
    tag = f"1000.{uuid.uuid4().int % 10**12:012d}"
    pytester.makepyfile(SLEEPER.format(tag=tag))
    proc = _start(pytester)
    try:
        _wait_for_line(proc, "sandbox running")
        builders = _builders(proc.pid)
        assert len(builders) == 1
        owner = f"{builders[0]}."  # the builder owns the cgroups: PID.STARTTIME
        assert any(os.path.basename(d).startswith(owner) for d in _our_cgroups())
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out
    assert "1 passed" not in out  # test_after never ran
    assert _processes_with(tag) == []
    assert not any(os.path.basename(d).startswith(owner) for d in _our_cgroups())
    assert proc.stdout is not None
    proc.stdout.close()


def _builders(pid: int) -> list[int]:
    found = []
    for child in psutil.Process(pid).children():
        try:
            if BUILDER_MODULE in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            pass
    return found


def _owned_by(builder: int) -> list[str]:
    """The cgroups and scratch directory of one sandbox builder (named PID.STARTTIME)."""
    return glob.glob(f"/sys/fs/cgroup/*/pytest-isolate/{builder}.*") + glob.glob(
        f"/tmp/pytest-isolate-{builder}.*"
    )


@pytest.mark.parametrize("victims", ["pytest", "pytest-and-builder"])
def test_killed_run_is_swept_by_the_next(
    pytester: pytest.Pytester, run: RunPytest, victims: str
) -> None:
    tag = f"1000.{uuid.uuid4().int % 10**12:012d}"
    pytester.makepyfile(SLEEPER.format(tag=tag))
    proc = _start(pytester)
    try:
        _wait_for_line(proc, "sandbox running")
        builders = _builders(proc.pid)
        assert len(builders) == 1
        assert _owned_by(builders[0])
        # SIGKILL: pytest gets no chance to clean up. Killing the builder too leaves nobody.
        for pid in (proc.pid, *builders) if victims == "pytest-and-builder" else (proc.pid,):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    # No sandbox process survives: the builder dies with pytest (PDEATHSIG), the sandboxes
    # with the builder.
    end = time.monotonic() + 10
    while (_processes_with(tag) or psutil.pid_exists(builders[0])) and time.monotonic() < end:
        time.sleep(0.05)
    assert _processes_with(tag) == []
    assert not psutil.pid_exists(builders[0])
    pytester.makepyfile(
        test_other="import pytest\n\n@pytest.mark.isolated\ndef test_x():\n    pass\n"
    )
    run("test_other.py").assert_outcomes(passed=1)
    assert _owned_by(builders[0]) == []  # cleaned up by the builder, or swept by the next run


def test_killed_xdist_worker_leaves_nothing(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytest.importorskip("xdist")
    tag = f"1000.{uuid.uuid4().int % 10**12:012d}"
    pytester.makepyfile(SLEEPER.format(tag=tag))
    proc = _start(pytester, "-n", "2")
    try:
        end = time.monotonic() + 60
        while not _processes_with(tag) and time.monotonic() < end:
            time.sleep(0.05)
        (sleeper,) = _processes_with(tag)
        test_process = psutil.Process(sleeper).parent()
        assert test_process is not None
        worker = test_process.parent()  # forked by the worker into the sandbox
        assert worker is not None and worker.ppid() == proc.pid  # an xdist worker
        builders = _builders(worker.pid)
        assert len(builders) == 1
        worker.kill()  # SIGKILL, mid-test
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "crashed while running" in out, out
    assert "1 failed, 1 passed" in out, out  # xdist reports the crash; the run goes on
    end = time.monotonic() + 10
    while (_processes_with(tag) or psutil.pid_exists(builders[0])) and time.monotonic() < end:
        time.sleep(0.05)
    assert _processes_with(tag) == []
    assert not psutil.pid_exists(builders[0])
    assert _owned_by(builders[0]) == []  # the builder cleaned up when its worker died
