"""Escape attempts from inside a sandbox, each checked from the host afterwards.

Cases from bubblewrap's, runc's and crun's own suites (see the design notes). The
sandbox's root is entered with MS_MOVE + chroot, so the classic chroot escape is here
too: it must land in the snapshot, never on the host.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from conftest import RunPytest, needs_root

pytestmark = needs_root


def test_escape_attempts_fail(pytester: pytest.Pytester, run: RunPytest) -> None:
    tag = uuid.uuid4().hex
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
        """
    )
    mounts_before = Path("/proc/self/mountinfo").read_text()
    result = run("-v")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        ["*test_kill_everything_reaches_only_the_sandbox*", "*was killed by signal 9 (SIGKILL)*"]
    )
    assert host_only.read_text() == "secret"
    assert not os.path.exists(f"/etc/escaped-{tag}")
    assert not os.path.exists(f"/mnt/{tag}")
    assert Path("/proc/self/mountinfo").read_text() == mounts_before
    assert os.getppid() > 1  # we, on the host, survived kill(-1, SIGKILL) inside
