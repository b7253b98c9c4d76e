"""Tests for ``pytest_isolate.builder.namespaces``: the sandbox's user namespace and pid 1.

Against the real kernel, in a subprocess each (the steps change the calling process's
namespaces for its children: never pytest's own).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from conftest import needs_root, run_script


def _run(script: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(run_script(script))
    return result


@needs_root
def test_new_user_namespace_maps_every_id_to_itself_and_leaves_no_process() -> None:
    result = _run(
        """
        import json, os
        from pytest_isolate import ffi
        from pytest_isolate.builder.namespaces import new_user_namespace, reap

        fd, helper = new_user_namespace()
        out = {"ns": os.readlink(f"/proc/self/fd/{fd}"), "ours": os.readlink("/proc/self/ns/user")}
        pending = [helper]
        reap(pending, wait=True)
        out["pending"] = pending
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            out["children"] = 0  # the process that made it is gone, and reaped
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            ffi.setns(fd, ffi.CLONE_NEWUSER)
            os.write(w, json.dumps([open("/proc/self/uid_map").read(), os.getuid(),
                                    open("/proc/self/gid_map").read()]).encode())
            os._exit(0)
        os.close(w)
        out["inside"] = json.loads(os.read(r, 4096))
        os.waitpid(pid, 0)
        print(json.dumps(out))
        """
    )
    assert str(result["ns"]).startswith("user:[")
    assert result["ns"] != result["ours"]
    assert result["pending"] == []
    assert result["children"] == 0
    uid_map, uid, gid_map = result["inside"]
    assert uid_map.split() == ["0", "0", "4294967295"]
    assert gid_map.split() == ["0", "0", "4294967295"]
    assert uid == 0


@needs_root
def test_spawned_init_reaps_orphans_keeps_no_descriptor_and_exits_at_eof() -> None:
    result = _run(
        """
        import json, os, select, signal, time
        from pytest_isolate import ffi
        from pytest_isolate.builder.namespaces import spawn_init
        from pytest_isolate.pid1.program import init_program

        keep = os.open("/", os.O_RDONLY)  # close-on-exec, as every descriptor of ours
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in the builder
        program = init_program()  # chosen with a trial run: before the pid namespace
        ffi.unshare(ffi.CLONE_NEWPID)
        init, lifeline = spawn_init(program)
        # posix_spawn returns once the exec has begun: its close-on-exec descriptors
        # go a moment later. None may stay.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            fds = sorted(os.listdir(f"/proc/{init}/fd"))
            if fds == ["0", "1", "2"]:
                break
            time.sleep(0.01)
        out = {"fds": fds}
        status = open(f"/proc/{init}/status").read()
        ignored = int(status.split("SigIgn:")[1].split()[0], 16)
        out["sigchld_ignored"] = bool(ignored & (1 << (signal.SIGCHLD - 1)))
        out["sigint_ignored"] = bool(ignored & (1 << (signal.SIGINT - 1)))
        out["our_sigchld"] = signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
        # An orphan: forked into the namespace, its parent exits first.
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            if os.fork() == 0:
                os.close(w)
                os.read(r, 1)  # until our parent is gone
                os._exit(0)
            os._exit(0)
        os.waitpid(child, 0)
        os.close(w)  # the orphan exits now, reparented to init
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            tasks = open(f"/proc/{init}/task/{init}/children").read().split()
            if not tasks:
                break
            time.sleep(0.01)
        out["init_children"] = tasks  # a zombie would still be listed
        pidfd = os.pidfd_open(init)
        out["alive"] = not select.select([pidfd], [], [], 0.2)[0]
        os.close(lifeline)
        out["exited_at_eof"] = bool(select.select([pidfd], [], [], 10)[0])
        os.waitpid(init, 0)
        print(json.dumps(out))
        """
    )
    assert result["fds"] == ["0", "1", "2"]
    assert result["sigchld_ignored"] is True
    assert result["sigint_ignored"] is True
    assert result["our_sigchld"] is True  # the builder's own disposition is back
    assert result["init_children"] == []
    assert result["alive"] is True
    assert result["exited_at_eof"] is True


def test_reap_takes_only_the_children_that_are_gone_unless_told_to_wait() -> None:
    from pytest_isolate.builder.namespaces import reap

    running = subprocess.Popen(["sleep", "60"])
    done = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/proc/{done.pid}") or "Z" not in _state(done.pid):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pids = [running.pid, done.pid]
    reap(pids)
    assert pids == [running.pid]
    running.kill()
    reap(pids, wait=True)
    assert pids == []
    assert not os.path.exists(f"/proc/{running.pid}")
    running.returncode = done.returncode = 0  # reaped by reap(): Popen must not wait


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]
