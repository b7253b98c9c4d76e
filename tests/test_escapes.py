"""Escape attempts from inside a sandbox, each checked from the host afterwards.

Cases from bubblewrap's, runc's and crun's own suites (see the design notes). The
sandbox's root is entered with MS_MOVE + chroot, so the classic chroot escape is here
too: it must land in the snapshot, never on the host.

The same suite runs twice: as root, and rootless (as an unprivileged user, started by
root: ``PYTEST_ISOLATE_ROOTLESS_USER`` and ``PYTEST_ISOLATE_ROOTLESS_PYTHON``, see
``.ci/run``). Rootless, the test writes into a directory that user owns instead of /etc.
"""

from __future__ import annotations

import os
import pwd
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import termios
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import IS_ROOT, RunPytest, needs_root

CONDITIONS = str(Path(__file__).with_name("conditions.py"))
USER = os.environ.get("PYTEST_ISOLATE_ROOTLESS_USER", "")
PYTHON = os.environ.get("PYTEST_ISOLATE_ROOTLESS_PYTHON", "")

ESCAPES = """
import ctypes, errno, os, signal, socket, subprocess, pytest

libc = ctypes.CDLL(None, use_errno=True)
HOST_ONLY = {host_only!r}
WRITABLE = {writable!r}  # on the host, only root (or the rootless user) may write here
SETUID_ID = {setuid_id!r}  # a setuid-root copy of id(1), made on the host
RUN_AS = {run_as!r}  # as root, run it as this unprivileged uid
PYTEST_PID = os.getpid()  # at import, in pytest's own process: the test's parent


def _pipes():
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{{fd}}")
        except OSError:  # the directory's own descriptor, closed by now
            continue
        if int(fd) > 2 and target.startswith("pipe:"):
            found.add(target)
    return found


INHERITED_PIPES = _pipes()  # what pytest itself was started with, before any test

@pytest.mark.isolated
def test_classic_chroot_escape_lands_in_the_snapshot():
    os.remove(HOST_ONLY)  # removed from the snapshot only
    os.mkdir(WRITABLE + "/escape")
    fd = os.open("/", os.O_RDONLY)
    os.chroot(WRITABLE + "/escape")  # we hold CAP_SYS_CHROOT in our own user namespace
    os.fchdir(fd)
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
    assert not os.path.exists(HOST_ONLY), "reached the host's root"
    assert os.path.isdir(WRITABLE + "/escape")  # still the snapshot
    with open(WRITABLE + "/escaped-{tag}", "w") as f:
        f.write("x")

@pytest.mark.isolated
def test_proc_1_root_is_the_snapshot():
    os.remove(HOST_ONLY)
    with pytest.raises(OSError):
        os.listdir("/proc/1/root")  # init: outside our user namespace (rootless: not
        # dumpable): no access at all
    with pytest.raises(OSError):
        os.open("/proc/1/ns/user", os.O_RDONLY)
    assert not os.path.exists(HOST_ONLY)

@pytest.mark.isolated
def test_cannot_ptrace_init():
    PTRACE_ATTACH = 16
    assert libc.ptrace(PTRACE_ATTACH, 1, None, None) == -1
    assert ctypes.get_errno() == errno.EPERM

@pytest.mark.isolated
def test_kill_everything_reaches_only_the_sandbox():
    if os.fork() == 0:
        os.setsid()
        os.kill(-1, signal.SIGKILL)  # everything this process may signal...
        os._exit(0)
    os.wait()  # ...which is the sandbox, this test included: it dies here

@pytest.mark.isolated
def test_mount_inside_stays_inside():
    CLONE_NEWNS = 0x00020000
    assert libc.unshare(CLONE_NEWNS) == 0  # allowed: our own mount namespace
    assert libc.mount(b"none", b"/mnt", b"tmpfs", 0, None) == 0
    with open("/mnt/{tag}", "w") as f:
        f.write("x")

@pytest.mark.isolated
def test_only_expected_fds_are_open():
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    targets = {{fd: os.readlink(f"/proc/self/fd/{{fd}}") for fd in fds
                if os.path.exists(f"/proc/self/fd/{{fd}}")}}
    for fd, target in targets.items():
        assert not target.startswith("/sys/fs/cgroup"), (fd, target)
        assert "pidfd" not in target, (fd, target)
        assert not target.startswith(("user:", "mnt:", "net:", "pid:")), (fd, target)
        assert not (target.startswith("/") and os.path.isdir(target)), (fd, target)
    # Of pytest's own pipes, the report pipe only: none of another test's (a test process
    # forked while another test runs holds none of that test's).
    assert len(_pipes() - INHERITED_PIPES) == 1, targets

@pytest.mark.isolated
def test_cannot_reach_or_ptrace_the_parent():
    PTRACE_ATTACH = 16
    assert os.getppid() == 0  # pytest lives outside our pid namespace
    assert not os.path.exists(f"/proc/{{PYTEST_PID}}")  # pytest's host pid
    assert libc.ptrace(PTRACE_ATTACH, PYTEST_PID, None, None) == -1
    assert ctypes.get_errno() == errno.ESRCH

@pytest.mark.isolated
def test_only_sandbox_processes_in_proc():
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    assert pids == [1, os.getpid()], pids  # init and us: nothing of the host

@pytest.mark.isolated
def test_setuid_binary_gains_nothing():
    expected = os.getuid() if RUN_AS is None else RUN_AS
    out = subprocess.run(
        [SETUID_ID, "-u"], user=RUN_AS, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str(expected)  # not 0: exec grants no privileges here

@pytest.mark.isolated
def test_proc_knobs_are_not_writable():
    for path in ("/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches",
                 "/proc/sysrq-trigger"):
        with pytest.raises(OSError):
            with open(path, "w") as f:
                f.write("1")

@pytest.mark.isolated
def test_host_port_is_a_different_port():
    # The host listens on this port; binding it here succeeds and is our own.
    with socket.socket() as server:
        server.bind(("127.0.0.1", {host_port}))
        server.listen()
        with socket.create_connection(("127.0.0.1", {host_port})) as client:
            conn, _ = server.accept()
            client.sendall(b"inside")
            assert conn.recv(6) == b"inside"
            conn.close()
"""


@dataclass
class Host:
    """What the suite attacks, set up on the host, and the checks that nothing was hit."""

    tag: str
    directory: Path
    host_only: Path
    writable: str
    setuid_id: str
    server: socket.socket
    bystander: subprocess.Popen[bytes]
    mounts_before: str

    def suite(self, run_as: int | None) -> str:
        return ESCAPES.format(
            host_only=str(self.host_only), writable=self.writable, setuid_id=self.setuid_id,
            run_as=run_as, tag=self.tag, host_port=self.server.getsockname()[1],
        )  # fmt: skip

    def assert_untouched(self, stdout: str) -> None:
        try:
            self.server.accept()
            reached_host = True
        except BlockingIOError:
            reached_host = False
        assert not reached_host, "a connection from inside reached the host's listener"
        assert self.host_only.read_text() == "secret"
        assert not os.path.exists(f"{self.writable}/escaped-{self.tag}")
        assert not os.path.exists(f"{self.writable}/escape")
        assert not os.path.exists(f"/mnt/{self.tag}")
        assert Path("/proc/self/mountinfo").read_text() == self.mounts_before
        assert self.bystander.poll() is None, "kill(-1, SIGKILL) inside reached the host"


@pytest.fixture
def host() -> Iterator[Host]:
    tag = uuid.uuid4().hex
    # Not under pytest's own temp dir (mode 0700): the rootless user must reach it.
    directory = Path(tempfile.mkdtemp(prefix="pytest-isolate-escapes-"))
    os.chmod(directory, 0o755)
    host_only = directory / f"host-only-{tag}"
    host_only.write_text("secret")
    setuid_id = directory / "setuid-id"
    shutil.copy("/usr/bin/id", setuid_id)
    os.chmod(setuid_id, 0o4755)  # owned by root, setuid: euid 0 wherever exec honours it
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    # A host process of the user the tests run as: kill(-1) must not reach it.
    owner = pwd.getpwnam(USER) if USER else None
    bystander = subprocess.Popen(
        ["sleep", "600"],
        user=owner.pw_uid if owner else None, group=owner.pw_gid if owner else None,
    )  # fmt: skip
    try:
        yield Host(tag, directory, host_only, "/etc", str(setuid_id), server, bystander,
                   Path("/proc/self/mountinfo").read_text())  # fmt: skip
    finally:
        bystander.kill()
        bystander.wait()
        server.close()
        shutil.rmtree(directory, ignore_errors=True)
        for leftover in (f"/etc/escaped-{tag}", f"/mnt/{tag}"):
            Path(leftover).unlink(missing_ok=True)


def _check_outcomes(stdout: str) -> None:
    assert "10 passed" in stdout and "1 failed" in stdout, stdout
    failed = [line for line in stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "test_kill_everything_reaches_only_the_sandbox" in failed[0]
    assert "was killed by signal 9 (SIGKILL)" in stdout, stdout


@needs_root
def test_escape_attempts_fail(pytester: pytest.Pytester, run: RunPytest, host: Host) -> None:
    pytester.makepyfile(test_escapes=host.suite(run_as=65534))
    result = run("-v")
    _check_outcomes(result.stdout.str())
    host.assert_untouched(result.stdout.str())
    assert os.getppid() > 1  # we, on the host, survived kill(-1, SIGKILL) inside


@pytest.mark.skipif(
    not (IS_ROOT and USER and PYTHON),
    reason="needs root, PYTEST_ISOLATE_ROOTLESS_USER and PYTEST_ISOLATE_ROOTLESS_PYTHON "
    "(see .ci/run)",
)
def test_escape_attempts_fail_rootless(host: Host) -> None:
    user = pwd.getpwnam(USER)
    work = host.directory / "work"  # the rootless user's: its writes there must not land
    work.mkdir()
    os.chown(work, user.pw_uid, user.pw_gid)
    host.writable = str(work)
    host.host_only = work / host.host_only.name  # where this user may delete it (inside)
    host.host_only.write_text("secret")
    # The setuid binary works for this user outside a sandbox: the check inside can fail.
    outside = subprocess.run(
        [sys.executable, CONDITIONS, f"user={USER}", "--", host.setuid_id, "-u"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert outside.strip() == "0"
    (work / "test_escapes.py").write_text(host.suite(run_as=None))
    command = [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-v"]
    env = {**os.environ, "HOME": str(work), "TMPDIR": str(work)}
    result = subprocess.run(
        [sys.executable, CONDITIONS, f"user={USER}", "--", *command],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = result.stdout
    assert "isolation: rootless, pid net mnt uts ipc user namespaces" in out, out + result.stderr
    _check_outcomes(out)
    host.assert_untouched(out)


PROCESS_GROUP = """
import ctypes, os, platform, signal, subprocess, pytest

libc = ctypes.CDLL(None, use_errno=True)
IOPRIO_SET, IOPRIO_GET = {"x86_64": (251, 252), "aarch64": (30, 31)}[platform.machine()]
IOPRIO_WHO_PROCESS, IOPRIO_WHO_PGRP = 1, 2
IDLE = 3 << 13  # IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0)
# At import, in pytest's own process.
BEFORE = (os.getpriority(os.PRIO_PROCESS, 0), libc.syscall(IOPRIO_GET, IOPRIO_WHO_PROCESS, 0))

@pytest.mark.isolated
def test_kill_zero():
    os.kill(os.getppid(), signal.SIGTERM)  # getppid() is 0 here: kill(0), our own group

@pytest.mark.isolated
def test_trap_kill_zero():
    subprocess.run(["bash", "-c", "trap 'kill 0' EXIT; true"])

@pytest.mark.isolated
def test_group_priorities():
    os.setpriority(os.PRIO_PGRP, 0, 19)
    assert libc.syscall(IOPRIO_SET, IOPRIO_WHO_PGRP, 0, IDLE) == 0
    assert os.getpriority(os.PRIO_PROCESS, 0) == 19  # it did reach this process

def test_pytest_unchanged():
    now = (os.getpriority(os.PRIO_PROCESS, 0), libc.syscall(IOPRIO_GET, IOPRIO_WHO_PROCESS, 0))
    assert now == BEFORE
"""


@needs_root
def test_process_group_calls_reach_the_sandbox_only(pytester: pytest.Pytester) -> None:
    """kill(0), setpriority(PRIO_PGRP, 0) and ioprio_set(IOPRIO_WHO_PGRP, 0) in a test reach
    the test's own process group, never pytest's. (The inner pytest gets a session of its
    own: without the fix its kill(0) would reach ours.)"""
    pytester.makepyfile(test_group=PROCESS_GROUP)
    result = pytester.run(
        "setsid", "-w", sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
        "-p", "no:randomly", "-q", timeout=120,
    )  # fmt: skip
    out = result.stdout.str()
    assert result.ret == 1, out
    result.assert_outcomes(passed=2, failed=2)
    assert out.count("killed by signal 15 (SIGTERM) during call") == 2, out


TERMINAL = """
import errno, fcntl, os, termios, pytest

def _ttys():
    return [int(fd) for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")
            and os.isatty(int(fd))]

@pytest.mark.isolated
def test_no_controlling_terminal():
    with pytest.raises(OSError) as exc:
        os.open("/dev/tty", os.O_RDWR)
    assert exc.value.errno == errno.ENXIO

@pytest.mark.isolated
def test_no_keystrokes_injected():
    ttys = _ttys()
    assert ttys  # pytest's terminal is in reach: -s's streams, or capture's copies of them
    for fd in ttys:
        with pytest.raises(OSError) as exc:
            fcntl.ioctl(fd, termios.TIOCSTI, b"#")
        assert exc.value.errno == errno.EPERM

@pytest.mark.isolated
def test_turns_echo_off():
    for fd in _ttys():
        attrs = termios.tcgetattr(fd)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    assert not termios.tcgetattr(_ttys()[0])[3] & termios.ECHO

@pytest.mark.isolated
def test_output():
    print("OUTPUT" + "-OF-THE-TEST")
    assert 0
"""


def _run_on_terminal(
    pytester: pytest.Pytester, *args: str, condition: str = ""
) -> tuple[int, str, bool]:
    """Run pytest with a new pseudo-terminal as its controlling terminal and standard
    streams, as from a shell; its exit status, what it wrote, and whether echo is on.
    ``condition``: a degraded host to run it on (``tests/conditions.py``)."""
    main, terminal = os.openpty()
    try:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
        if condition:
            command = [sys.executable, CONDITIONS, condition, "--", *command]
        proc = subprocess.Popen(
            ["setsid", "-c", "-w", *command, *args],
            cwd=pytester.path, stdin=terminal, stdout=terminal, stderr=terminal,
        )  # fmt: skip
        out = bytearray()
        deadline = time.monotonic() + 60
        while proc.poll() is None or select.select([main], [], [], 0)[0]:
            if time.monotonic() > deadline:
                proc.kill()
            if select.select([main], [], [], 0.1)[0]:
                out += os.read(main, 1 << 16)
        proc.wait()
        echo = bool(termios.tcgetattr(terminal)[3] & termios.ECHO)
        return proc.returncode, out.decode(errors="replace"), echo
    finally:
        os.close(main)
        os.close(terminal)


@needs_root
@pytest.mark.parametrize("capture", ["fd", "no"])
@pytest.mark.parametrize("condition", ["", "seccomp-unshare"], ids=["sandbox", "fork-only"])
def test_no_controlling_terminal_and_settings_restored(
    pytester: pytest.Pytester, capture: str, condition: str
) -> None:
    """The test cannot open /dev/tty or push keystrokes into pytest's terminal; a change to
    its settings is undone when the test ends; output capture and -s work as before.
    (Fork-only, a test run by root holds CAP_SYS_ADMIN, which lets TIOCSTI through.)"""
    pytester.makepyfile(test_terminal=TERMINAL)
    names = ["no_controlling_terminal", "no_keystrokes_injected", "turns_echo_off"]
    args = [f"--capture={capture}", "-v"]
    if condition:
        names.remove("no_keystrokes_injected")
        args += ["--deselect", "test_terminal.py::test_no_keystrokes_injected"]
    code, out, echo = _run_on_terminal(pytester, *args, condition=condition)
    assert code == 1, out
    assert "fork only" in out if condition else "fork only" not in out
    for name in names:
        assert f"test_{name} PASSED" in out, out
    assert "FAILED test_terminal.py::test_output - assert 0" in out, out
    assert echo, "the test left the terminal with echo off"
    assert "OUTPUT-OF-THE-TEST" in out
    assert ("Captured stdout call" in out) == (capture == "fd"), out
