"""Escape attempts from inside a sandbox, each checked from the host afterwards.

Cases from bubblewrap's, runc's and crun's own suites (see the design notes). The
sandbox's root is entered with MS_MOVE + chroot, so the classic chroot escape is here
too: it must land in the snapshot, never on the host.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from conftest import RunPytest, needs_root

pytestmark = needs_root


def test_escape_attempts_fail(pytester: pytest.Pytester, run: RunPytest) -> None:
    tag = uuid.uuid4().hex
    host_server = socket.socket()
    host_server.bind(("127.0.0.1", 0))
    host_server.listen()
    host_server.setblocking(False)
    host_port = host_server.getsockname()[1]
    host_only = pytester.path / f"host-only-{tag}"
    host_only.write_text("secret")
    pytester.makepyfile(
        f"""
        import ctypes, errno, os, signal, socket, pytest

        libc = ctypes.CDLL(None, use_errno=True)
        HOST_ONLY = {str(host_only)!r}

        @pytest.mark.isolated
        def test_classic_chroot_escape_lands_in_the_snapshot():
            os.remove(HOST_ONLY)  # removed from the snapshot only
            os.mkdir("/escape")
            fd = os.open("/", os.O_RDONLY)
            os.chroot("/escape")  # we hold CAP_SYS_CHROOT in our own user namespace
            os.fchdir(fd)
            for _ in range(64):
                os.chdir("..")
            os.chroot(".")
            assert not os.path.exists(HOST_ONLY), "reached the host's root"
            assert os.path.isdir("/escape")  # still the snapshot
            with open("/etc/escaped-{tag}", "w") as f:
                f.write("x")

        @pytest.mark.isolated
        def test_proc_1_root_is_the_snapshot():
            os.remove(HOST_ONLY)
            with pytest.raises(OSError):
                os.listdir("/proc/1/root")  # init is not dumpable: no access at all
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
                assert not (target.startswith("/") and os.path.isdir(target)), (fd, target)

        @pytest.mark.isolated
        def test_cannot_reach_or_ptrace_the_parent():
            PTRACE_ATTACH = 16
            assert os.getppid() == 0  # pytest lives outside our pid namespace
            assert not os.path.exists("/proc/{os.getpid()}")  # pytest's host pid
            assert libc.ptrace(PTRACE_ATTACH, {os.getpid()}, None, None) == -1
            assert ctypes.get_errno() == errno.ESRCH

        @pytest.mark.isolated
        def test_only_sandbox_processes_in_proc():
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            assert pids == [1, os.getpid()], pids  # init and us: nothing of the host

        @pytest.mark.isolated
        def test_setuid_binary_gains_nothing(tmp_path):
            import shutil, subprocess
            setuid_id = "/usr/local/bin/setuid-id-{tag}"
            shutil.copy("/usr/bin/id", setuid_id)
            os.chmod(setuid_id, 0o4755)  # owned by root, setuid
            out = subprocess.run(
                [setuid_id, "-u"], user=65534, capture_output=True, text=True, check=True
            ).stdout
            assert out.strip() == "65534"  # not 0: exec grants no privileges here

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
    )
    mounts_before = Path("/proc/self/mountinfo").read_text()
    try:
        result = run("-v")
    finally:
        try:
            host_server.accept()
            reached_host = True
        except BlockingIOError:
            reached_host = False
        host_server.close()
    assert not reached_host, "a connection from inside reached the host's listener"
    result.assert_outcomes(passed=10, failed=1)
    result.stdout.fnmatch_lines(
        ["*test_kill_everything_reaches_only_the_sandbox*", "*was killed by signal 9 (SIGKILL)*"]
    )
    assert host_only.read_text() == "secret"
    assert not os.path.exists(f"/etc/escaped-{tag}")
    assert not os.path.exists(f"/mnt/{tag}")
    assert not os.path.exists(f"/usr/local/bin/setuid-id-{tag}")
    assert Path("/proc/self/mountinfo").read_text() == mounts_before
    assert os.getppid() > 1  # we, on the host, survived kill(-1, SIGKILL) inside
