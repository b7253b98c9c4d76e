"""End to end: what must hold inside an isolated test (pid, mount, net, uts/ipc, privileges).

Every test here runs a real pytest in a subprocess (``runpytest_subprocess``) on a
generated test file, and checks both the inner outcomes and, where it matters, the
host afterwards.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import RunPytest, needs_root

pytestmark = needs_root


def test_pid_namespace_proc_signals_orphans_and_daemons(
    pytester: pytest.Pytester, run: RunPytest
) -> None:
    tag = f"1000.{uuid.uuid4().int % 10**12:012d}"  # a unique argument for sleep(1)
    pytester.makepyfile(
        f"""
        import os, signal, subprocess, time, pytest

        @pytest.mark.isolated
        def test_proc_shows_only_sandbox():
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            assert os.getpid() == 2
            assert pids == [1, 2], pids

        @pytest.mark.isolated
        def test_sigterm_self_dies():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)

        @pytest.mark.isolated
        def test_orphans_are_reaped():
            for _ in range(5):
                child = os.fork()
                if child == 0:
                    if os.fork() == 0:
                        time.sleep(0.1)
                        os._exit(0)  # grandchild: orphaned, then exits
                    os._exit(0)
                os.waitpid(child, 0)
            time.sleep(0.5)
            for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
                with open(f"/proc/{{pid}}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                assert state != "Z", f"zombie {{pid}}"

        @pytest.mark.isolated
        def test_daemon_started():
            if os.fork() == 0:  # double fork + setsid: a classic daemon
                os.setsid()
                if os.fork() == 0:
                    os.execvp("sleep", ["sleep", "{tag}"])
                os._exit(0)
            time.sleep(0.2)
            assert any("{tag}" in open(f"/proc/{{p}}/cmdline").read()
                       for p in os.listdir("/proc") if p.isdigit())

        def test_zz_daemon_is_gone_on_the_host():  # not isolated: sees the host's /proc
            found = []
            for p in os.listdir("/proc"):
                try:
                    if p.isdigit() and "{tag}" in open(f"/proc/{{p}}/cmdline").read():
                        found.append(p)
                except OSError:
                    pass
            assert found == []
        """
    )
    result = run("-v")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        ["*test_sigterm_self_dies*FAILED*", "*was killed by signal 15 (SIGTERM) during call*"]
    )
    leftovers = [
        p.pid for p in psutil.process_iter(["cmdline"]) if tag in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_filesystem_writes_do_not_reach_the_host(pytester: pytest.Pytester, run: RunPytest) -> None:
    tag = uuid.uuid4().hex
    victim = pytester.path / "existing.txt"
    victim.write_text("keep me")
    home = Path(os.path.expanduser("~"))
    pytester.makepyfile(
        f"""
        import os, pathlib, pytest, json

        @pytest.mark.isolated
        def test_write_everywhere(tmp_path):
            for path in ["/etc/isolate-{tag}", "/tmp/isolate-{tag}",
                         os.path.expanduser("~/isolate-{tag}"), "isolate-{tag}",
                         "/dev/shm/isolate-{tag}"]:
                with open(path, "w") as f:
                    f.write("x")
                assert open(path).read() == "x"
            os.remove("existing.txt")
            assert not os.path.exists("existing.txt")
            with open("/etc/hosts", "a") as f:
                f.write("# {tag}\\n")
            (tmp_path / "f").write_text("tmp_path works")
            assert (tmp_path / "f").read_text() == "tmp_path works"
            import pytest_isolate, json  # imports from the virtualenv still work
        """
    )
    result = run()
    result.assert_outcomes(passed=1)
    for path in [Path(f"/etc/isolate-{tag}"), Path(f"/tmp/isolate-{tag}"), home / f"isolate-{tag}",
                 pytester.path / f"isolate-{tag}", Path(f"/dev/shm/isolate-{tag}")]:  # fmt: skip
        assert not path.exists(), path
    assert victim.read_text() == "keep me"
    assert tag not in Path("/etc/hosts").read_text()


def test_network_only_loopback(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import os, socket, threading, pytest

        @pytest.mark.isolated
        def test_only_lo_up():
            assert sorted(os.listdir("/sys/class/net")) == ["lo"]
            with open("/sys/class/net/lo/operstate") as f:
                assert f.read().strip() in ("unknown", "up")

        @pytest.mark.isolated
        def test_server_on_loopback():
            srv = socket.socket()
            srv.bind(("127.0.0.1", 8765))
            srv.listen()
            def serve():
                conn, _ = srv.accept()
                conn.sendall(conn.recv(10).upper())
                conn.close()
            t = threading.Thread(target=serve)
            t.start()
            c = socket.create_connection(("127.0.0.1", 8765))
            c.sendall(b"ping")
            assert c.recv(10) == b"PING"
            t.join()

        @pytest.mark.isolated
        def test_same_port_again():
            srv = socket.socket()
            srv.bind(("127.0.0.1", 8765))  # a fresh namespace: the port is free again

        @pytest.mark.isolated
        def test_no_route_out():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with pytest.raises(OSError) as exc:
                s.connect(("192.0.2.1", 53))
            assert exc.value.errno == 101  # ENETUNREACH
        """
    )
    run().assert_outcomes(passed=4)


def test_uts_and_ipc_are_private(pytester: pytest.Pytester, run: RunPytest) -> None:
    host_shm = set(os.listdir("/dev/shm"))
    pytester.makepyfile(
        """
        import os, socket, pytest

        @pytest.mark.isolated
        def test_default_hostname():
            assert socket.gethostname() == "isolated"

        @pytest.mark.isolated(hostname="box-1")
        def test_own_hostname():
            assert socket.gethostname() == "box-1"

        @pytest.mark.isolated
        def test_fresh_ipc():
            assert os.listdir("/dev/shm") == []
            with open("/proc/sysvipc/shm") as f:
                assert len(f.read().splitlines()) == 1  # the header only
            with open("/dev/shm/x", "w") as f:
                f.write("x")
        """
    )
    run().assert_outcomes(passed=3)
    assert set(os.listdir("/dev/shm")) <= host_shm | set()
    assert "x" not in set(os.listdir("/dev/shm")) - host_shm


def test_root_inside_holds_no_host_privilege(pytester: pytest.Pytester, run: RunPytest) -> None:
    proc_files = [p for p in ["/proc/sys/kernel/domainname", "/proc/sys/vm/drop_caches",
                              "/proc/sysrq-trigger"] if os.path.exists(p)]  # fmt: skip
    pytester.makepyfile(
        f"""
        import ctypes, errno, os, pytest

        libc = ctypes.CDLL(None, use_errno=True)

        def mount(src, target, fstype):
            if libc.mount(src, target, fstype, 0, None) != 0:
                return ctypes.get_errno()
            return 0

        @pytest.mark.isolated
        def test_is_uid_0_without_host_power():
            assert os.getuid() == 0
            assert mount(b"none", b"/mnt", b"tmpfs") == errno.EPERM

        @pytest.mark.isolated
        def test_proc_sys_read_only():
            for path in {proc_files!r}:
                with pytest.raises(OSError) as exc:
                    with open(path, "w") as f:
                        f.write("1")
                assert exc.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM), path

        @pytest.mark.isolated
        def test_cannot_load_modules():
            assert libc.syscall(175, None, 0, b"") != 0  # init_module
            # EPERM: no CAP_SYS_MODULE in the initial user namespace (ENOSYS: a kernel
            # built without module support refuses everyone).
            assert ctypes.get_errno() in (errno.EPERM, errno.ENOSYS)

        @pytest.mark.isolated
        def test_cannot_set_hostname_or_configure_network():
            assert libc.sethostname(b"x", 1) != 0
            assert ctypes.get_errno() == errno.EPERM
        """
    )
    run().assert_outcomes(passed=4)
