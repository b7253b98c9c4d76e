"""Tests for the fork server (``pytest_isolate.forkserver``, its client) on the real kernel,
in a subprocess each (they fork: never pytest's own process)."""

from __future__ import annotations

from conftest import run_script
from pytest_isolate.forkserver import clone


def test_supported_here() -> None:
    assert clone.supported()


def test_a_sibling_is_our_parents_child_and_a_working_python() -> None:
    out = run_script(
        """
        import os, threading
        from pytest_isolate.forkserver.clone import fork_as_sibling

        r, w = os.pipe()
        server = os.fork()
        if server == 0:
            pid = fork_as_sibling()
            if pid == 0:  # the sibling: Python's after-fork steps ran
                assert threading.current_thread() is threading.main_thread()
                os._exit(7)
            os.write(w, str(pid).encode())
            os._exit(0)
        os.waitpid(server, 0)
        sibling = int(os.read(r, 64))
        _, status = os.waitpid(sibling, 0)  # ours to reap, not the server's
        print(os.waitstatus_to_exitcode(status))
        """
    )
    assert out == "7"


def test_asking_a_stopped_server_is_an_oserror() -> None:
    out = run_script(
        """
        import os
        from pytest_isolate.controller.forkserver_client import ForkServer
        from pytest_isolate.testprocess.context import ChildContext

        server = ForkServer.start([], [], 0)
        server.stop()
        r, w = os.pipe()
        ctx = ChildContext(report_fd=w, dump_fd=-1, init_pid=0, init_pidfd=r, join_fds=(),
                           hostname="h", cwd="/", close_fds=(), turn_fd=r)
        try:
            server.fork(0, ctx, False)
        except OSError:
            print("OSError")
        """
    )
    assert out == "OSError"
