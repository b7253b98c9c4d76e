"""Faults a sandbox must survive: each ends as a clear report, and nothing is left behind;
and kernel state outside the namespaces (keyrings, cgroups) a test must not carry out."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

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


CGROUP_ESCAPE = """
import ctypes, errno, os, threading, pytest

libc = ctypes.CDLL(None, use_errno=True)
TAG = {tag!r}
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUSER = 0x20000, 0x02000000, 0x10000000


def _nested_cgroup_escape():
    # A user + mount + cgroup namespace of our own, then each hierarchy mounted at its
    # root (our own group): lift the caps, leave a directory.
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP) != 0:
        return "unshare refused: " + errno.errorcode[ctypes.get_errno()]
    for name, line in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
        with open(f"/proc/self/{{name}}", "w") as f:
            f.write(line)
    done = []
    for fs, options, knobs in (
        ("cgroup", "memory", {{"memory.memsw.limit_in_bytes": "-1",
                               "memory.limit_in_bytes": "-1"}}),
        ("cgroup", "pids", {{"pids.max": "max"}}),
        ("cgroup", "cpu", {{}}), ("cgroup", "name=systemd", {{}}), ("cgroup2", None, {{}}),
    ):
        target = f"/tmp/cg-{{options or fs}}"
        os.mkdir(target)
        data = options.encode() if options else None
        if libc.mount(b"cgroup", target.encode(), fs.encode(), 0, data) != 0:
            continue
        for knob, value in knobs.items():
            if not os.path.exists(f"{{target}}/{{knob}}"):
                continue  # memsw: no swap accounting
            with open(f"{{target}}/{{knob}}", "w") as f:
                f.write(value)
        os.mkdir(f"{{target}}/escape-{{TAG}}")
        done.append(options or fs)
    return "ESCAPED: " + " ".join(done)


@pytest.mark.isolated(mem="64M", pids=16)
def test_lift_caps_from_a_nested_cgroup_namespace():
    r, w = os.pipe()
    if os.fork() == 0:
        os.write(w, _nested_cgroup_escape().encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        attempt = f.read()
    os.wait()
    print("attempt:", attempt)
    # The caps, measured: a child touching 300 MiB, and 40 threads.
    child = os.fork()
    if child == 0:
        hog = bytearray(300 * 2**20)
        for i in range(0, len(hog), 4096):
            hog[i] = 1
        os._exit(0)
    _, status = os.waitpid(child, 0)
    print("hog:", "killed" if os.WIFSIGNALED(status) else "allocated 300 MiB")
    stop = threading.Event()
    threads = []
    try:
        for _ in range(40):
            t = threading.Thread(target=stop.wait)
            t.start()
            threads.append(t)
    except RuntimeError:
        pass
    stop.set()
    for t in threads:
        t.join()
    print("threads:", len(threads))
"""


def _cgroup_dirs_named(name: str) -> list[str]:
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(top, d) for d in dirs if d == name]
    return found


def test_nested_cgroup_namespace_cannot_lift_caps(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    """A nested user + cgroup namespace cannot mount the hierarchies to raise its own
    caps, nor leave directories on the host: the caps hold, measured."""
    tag = os.urandom(6).hex()
    pytester.makepyfile(test_cgroups=CGROUP_ESCAPE.format(tag=tag))
    try:
        result = run("-s", "-v")
    finally:
        left = _cgroup_dirs_named(f"escape-{tag}")
        for path in sorted(left, reverse=True):  # made by this test's own inner test
            os.rmdir(path)
    out = result.stdout.str()
    assert left == [], out
    assert "attempt: unshare refused: ENOSPC" in out, out
    assert "hog: killed" in out, out
    threads = int(out.split("threads: ", 1)[1].split()[0])
    assert 0 < threads < 16, out
    result.assert_outcomes(passed=1)


SUBGROUP = """
import os, subprocess, time, pytest

@pytest.mark.isolated
def test_leaves_a_child_in_a_sub_group():
    child = subprocess.Popen(["sleep", "{marker}"])
    # The host (the outer test) moves it into a group below ours, as a test allowed
    # to mount its cgroup hierarchy could.
    for _ in range(3000):
        with open(f"/proc/{{child.pid}}/cgroup") as f:
            if "/pytest-isolate-sub" in f.read():
                break
        time.sleep(0.01)
    else:
        pytest.fail("never moved")

@pytest.mark.isolated
@pytest.mark.parametrize("n", range(6))
def test_later(n):
    pass
"""


def _move_marked_process_into_a_sub_group(marker: str, moved: list[str]) -> None:
    """Find the process running ``sleep MARKER`` in a sandbox's group and move it into a
    new group below that group, in the memory and pids hierarchies."""
    end = time.monotonic() + 60
    while time.monotonic() < end and not moved:
        for procs in glob.glob("/sys/fs/cgroup/memory/pytest-isolate/*/*/cgroup.procs"):
            try:
                pids = Path(procs).read_text().split()
            except OSError:
                continue  # a group (of this run or another) gone since the glob
            for pid in pids:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if cmdline != f"sleep\0{marker}\0".encode():
                    continue
                group = os.path.dirname(procs).removeprefix("/sys/fs/cgroup/memory")
                for hierarchy in ("memory", "pids"):
                    sub = f"/sys/fs/cgroup/{hierarchy}{group}/pytest-isolate-sub"
                    os.mkdir(sub)
                    moved.append(sub)
                    Path(sub, "cgroup.procs").write_text(pid)
                return
        time.sleep(0.01)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_sub_group_in_a_sandboxs_group(pytester: pytest.Pytester, run: RunPytest) -> None:
    """A group made below a sandbox's group, with a process in it: the sandbox is torn
    down (its processes killed, its groups removed depth-first), the session completes,
    and nothing is left."""
    marker = f"{1000 + int.from_bytes(os.urandom(3), 'big')}"
    pytester.makepyfile(test_sub=SUBGROUP.format(marker=marker))
    # What a killed run left of such a test: its owner is gone, so this run sweeps it.
    gone = _dead_pid()
    stale = [f"/sys/fs/cgroup/{h}/pytest-isolate/{gone}.1/1/pytest-isolate-sub"
             for h in ("memory", "pids")]  # fmt: skip
    for path in stale:
        os.makedirs(path)
    moved: list[str] = []
    helper = threading.Thread(target=_move_marked_process_into_a_sub_group, args=(marker, moved))
    helper.start()
    try:
        start = time.monotonic()
        result = run("-v", timeout=90)
        elapsed = time.monotonic() - start
    finally:
        helper.join()
        left = [sub for sub in moved + stale if os.path.isdir(sub)]
        for sub in left:  # ours (made above): empty by now, or the run failed
            for pid in Path(sub, "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)
        for path in stale:
            for d in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
                try:
                    os.rmdir(d)
                except OSError:
                    pass  # busy for a moment after the kill: swept by the next run
    assert len(moved) == 2, result.stdout.str()
    result.assert_outcomes(passed=7)
    assert left == [], result.stdout.str()
    assert elapsed < 30, elapsed  # no 5 s wait per removal
    assert "cannot remove" not in result.stderr.str()
