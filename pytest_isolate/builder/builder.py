"""The sandbox builder's state and loop: sandboxes built ahead, handed to pytest, torn down.

Sandboxes are pushed to pytest as soon as they are built, up to ``SPARES`` beyond the
one in use, so that taking one costs pytest no round trip; a released sandbox is killed
and reaped while the next test runs. Messages are JSON over a SOCK_SEQPACKET socket:
from pytest "release" (with "diff": first send "changes", what its test changed),
"retry", "quit"; to pytest "ready" (with the sandbox's pid 1's pidfd, its namespaces and
its cgroup files as SCM_RIGHTS), "changes", "released", "error".
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from typing import Any, Final

from .. import ffi
from ..cgroups import CgroupBackend, CgroupError
from ..cgroups.detect import detect
from ..host.cgroup_choice import cgroup_backend
from ..mountinfo import parse_mountinfo
from ..pid1.program import InitProgram, init_program
from . import in_init, rooted
from .namespaces import kill_sandbox, reap
from .plan import BuildPlan
from .sandbox import Sandbox
from .snapshot import MountStep, plan_mounts, revealing_mounts, share_steps
from .unmapped import Found
from .upper import changes

# Sandboxes kept ready beside the one in use: two absorb a test shorter than one build.
SPARES = 3
HOME_NAMESPACES: Final = (
    ("mnt", ffi.CLONE_NEWNS),
    ("net", ffi.CLONE_NEWNET),
    ("uts", ffi.CLONE_NEWUTS),
    ("ipc", ffi.CLONE_NEWIPC),
    ("pid", ffi.CLONE_NEWPID),  # for our children: a second unshare(CLONE_NEWPID) needs it
)


# A message is one SOCK_SEQPACKET datagram, which pytest reads into 64 KiB.
MAX_CHANGES_BYTES: Final = 60_000


def _changes(sandbox: Sandbox | None) -> dict[str, Any]:
    """What the sandbox's test changed, cut to fit one message; or why it is not known."""
    if sandbox is None or sandbox.scratch_fd < 0:
        return {"changes": [], "more": 0, "error": "the sandbox has no snapshot to read"}
    try:
        found, more = changes(sandbox.scratch_fd)
    except OSError as exc:
        return {"changes": [], "more": 0, "error": f"could not read its snapshot: {exc}"}
    size = 0
    for index, (_, path) in enumerate(found):
        size += len(json.dumps(path)) + 8
        if size > MAX_CHANGES_BYTES:
            return {"changes": found[:index], "more": more + len(found) - index}
    return {"changes": found, "more": more}


class Builder:
    """The builder's state, its building and its loop: builds sandboxes ahead, hands them
    to pytest, tears down the ones pytest is done with."""

    def __init__(
        self,
        sock: socket.socket,
        scratch: str,
        plan: BuildPlan | None = None,
        shares: list[str] | None = None,
        stand_ins: Found | None = None,
    ) -> None:
        self.sock = sock
        self.stand_ins = stand_ins or Found()  # rootless: see ``unmapped``
        self.scratch = scratch
        self.plan = plan or BuildPlan()
        self.pid = os.getpid()
        with open("/proc/self/mountinfo") as f:
            mounts = parse_mountinfo(f.read())
        self.steps: list[MountStep] = plan_mounts(mounts, skip=[scratch])
        self.steps += share_steps(shares or [])  # read-write host paths, over the snapshot
        self.revealing = revealing_mounts(mounts, skip=[scratch])  # hidden from each sandbox
        self.backend: CgroupBackend | None = None
        if self.plan.cgroups:
            self.backend = (
                cgroup_backend(self.plan.cgroup_root)
                if self.plan.cgroup_root or self.plan.userns == "first"
                else detect(mounts)
            )
        # Chosen (and tried) once; rootless or without a snapshot, pid 1 is ours.
        self.init_program: InitProgram | None = None if self.plan.init_builds else init_program()
        self.dying_helpers: list[int] = []  # see new_user_namespace
        self.next_id = 0
        self.active: dict[int, Sandbox] = {}
        self.dying: dict[int, Sandbox] = {}  # pidfd -> a killed sandbox not yet reaped
        self.build_failed = False
        self.urgent = True  # the priority we start with; set_urgent(False) lowers it
        # Our own namespaces, to return to after building each sandbox in fresh ones.
        self.home = [
            (os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), nstype)
            for name, nstype in HOME_NAMESPACES
        ]

    def build(self) -> Sandbox:
        """Build one sandbox: as root the builder makes it (``rooted``); rootless, or
        without a snapshot, its pid 1 does (``in_init``)."""
        return in_init.build(self) if self.plan.init_builds else rooted.build(self)

    def finish(self, sandbox: Sandbox) -> None:
        """Reap a killed init and remove its cgroups."""
        try:
            os.waitpid(sandbox.pid, 0)
        except ChildProcessError:
            pass  # reaped by the kernel: it exited while spawn_init had SIGCHLD ignored
        os.close(sandbox.pidfd)
        for fd in (*sandbox.ns_fds, sandbox.lifeline, sandbox.scratch_fd):
            if fd >= 0:
                os.close(fd)
        if sandbox.group is not None:
            try:
                sandbox.group.remove(deadline=0)  # empty now: the namespace is gone
            except CgroupError:
                sandbox.group.kill()
                sandbox.group.remove()

    def destroy(self, sandbox: Sandbox) -> None:
        kill_sandbox(sandbox.pidfd)
        # init's exit completes only once every process of its namespace has been reaped.
        select.select([sandbox.pidfd], [], [], 30.0)
        self.finish(sandbox)

    # -- serving ----------------------------------------------------------------------------
    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.send(data)

    def announce(self, sandbox: Sandbox) -> None:
        """Hand a ready sandbox to pytest, with its init's pidfd and its cgroup join files."""
        self.active[sandbox.ident] = sandbox
        group = sandbox.group
        # Opened here, so the test process only writes "0" to each (no path lookups).
        paths = group.procs_files() if group is not None else []
        join = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in paths]
        self.send(
            {
                "op": "ready",
                "id": sandbox.ident,
                "pid": sandbox.pid,
                "cgroup": group.dirs() if group is not None else {},
                "group": group.name if group is not None else "",
                "problems": sandbox.problems,
                "namespaces": len(sandbox.ns_fds),  # the descriptors after the pidfd
            },
            [sandbox.pidfd, *sandbox.ns_fds, *join],
        )
        for fd in join:
            os.close(fd)

    def build_one(self) -> None:
        try:
            sandbox = self.build()
        except (OSError, RuntimeError) as exc:
            self.build_failed = True  # until pytest asks again ("retry")
            self.send({"op": "error", "message": str(exc)})
            return
        self.announce(sandbox)

    def handle_release(self, ident: int, diff: bool = False) -> None:
        """Kill a sandbox pytest is done with; with ``diff``, first send what its test
        changed in the snapshot (``upper.changes``: the test process has ended)."""
        sandbox = self.active.pop(ident, None)
        if diff:
            self.send({"op": "changes", "id": ident, **_changes(sandbox)})
        if sandbox is None:
            self.send({"op": "released", "id": ident})
            return
        kill_sandbox(sandbox.pidfd)
        self.dying[sandbox.pidfd] = sandbox

    def reap_dying(self, ready: list[int]) -> None:
        for fd in ready:
            sandbox = self.dying.pop(fd)
            self.finish(sandbox)
            self.send({"op": "released", "id": sandbox.ident})

    def set_urgent(self, urgent: bool) -> None:
        """Build at normal priority only when pytest is (about to be) waiting for a sandbox.

        With spares ready, build with CPU time nobody else wants, so a running test is never
        delayed on a small machine; sandboxes inherit the policy, so their teardown (in
        their init's exit) is deferred too. With none ready, idle priority would let any
        other load on the machine starve pytest.
        """
        if urgent == self.urgent:
            return
        self.urgent = urgent
        try:
            policy = os.SCHED_OTHER if urgent else os.SCHED_IDLE
            os.sched_setscheduler(0, policy, os.sched_param(0))
        except (AttributeError, OSError):  # not Linux, or not allowed: keep the priority
            pass

    def serve(self) -> None:
        """Handle messages first, then finish dying sandboxes, then build the next one.

        Sandboxes are pushed to pytest as soon as they are built, up to ``SPARES`` beyond
        the one in use, so that taking one costs pytest no round trip. A dying sandbox's
        init exits only once its whole namespace is gone, a millisecond or two of kernel
        work that happens while the next test runs.
        """
        while True:
            want = len(self.active) <= SPARES and not self.build_failed
            if not want:
                reap(self.dying_helpers, wait=True)  # killed: gone in a moment, before we idle
            fds = [self.sock.fileno(), *self.dying]
            ready, _, _ = select.select(fds, [], [], 0 if want else None)
            if self.sock.fileno() in ready:
                data = self.sock.recv(65536)
                if not data:
                    return
                message = json.loads(data)
                op = message["op"]
                if op == "release":
                    self.handle_release(int(message["id"]), bool(message.get("diff")))
                elif op == "retry":
                    self.build_failed = False
                elif op == "quit":
                    return
                continue
            self.reap_dying([fd for fd in ready if fd in self.dying])
            if not ready and want:
                # One active sandbox may be the one in use: then pytest has none in hand.
                self.set_urgent(len(self.active) <= 1)
                self.build_one()

    def close(self) -> None:
        """Destroy every sandbox left: all killed first, then reaped together (each init's
        exit waits for its namespaces' teardown, an RCU grace period or more: in turn,
        those add up at the end of every session)."""
        remaining = [*self.active.values(), *self.dying.values()]
        self.active.clear()
        self.dying.clear()
        for sandbox in remaining:
            kill_sandbox(sandbox.pidfd)
        reap(self.dying_helpers, wait=True)
        pending = {sandbox.pidfd: sandbox for sandbox in remaining}
        end = time.monotonic() + 30.0
        while pending and time.monotonic() < end:
            ready, _, _ = select.select(list(pending), [], [], end - time.monotonic())
            for fd in ready:
                try:
                    self.finish(pending.pop(fd))
                except OSError:
                    pass
        for sandbox in pending.values():  # not gone within 30 s: reaped here, whatever it takes
            try:
                self.finish(sandbox)
            except OSError:
                pass
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()
        if self.init_program is not None:
            self.init_program.close()
        try:
            os.rmdir(self.scratch)
        except OSError:
            pass
