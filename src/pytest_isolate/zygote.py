"""The sandbox builder: a small helper process, one per pytest process.

It builds the *next* sandbox (cgroups, pid 1 of fresh namespaces, the overlay
snapshot) while the current test runs, so the test process itself only has to
be forked and join. It is started by ``pool.SandboxPool`` with ``python -I -S``
(no site, no pytest: small, so its forks are cheap) and speaks JSON over a
SOCK_SEQPACKET socket; each "ready" carries a pidfd of the sandbox's init.

It dies with pytest: PR_SET_PDEATHSIG delivers SIGTERM, and the handler kills
every sandbox and removes their cgroups. If it is killed outright, the next
run's sweep removes what is left (every directory is named after its owner's
pid and start time).
"""

from __future__ import annotations

import errno
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from . import _ffi
from .cgroups import (
    CgroupBackend,
    CgroupError,
    Group,
    detect,
    owner_token,
    parse_mountinfo,
    token_is_stale,
)
from .isolation import BuildPlan
from .probe import cgroup_backend, enter_own_userns
from .sandbox.filesystem import (
    MountStep,
    build_tree,
    enter_root,
    enter_root_mount,
    plan_mounts,
    root_of,
    share_steps,
)
from .sandbox.namespaces import (
    ROOTLESS_NS_FILES,
    SANDBOX_NAMESPACES,
    init_loop,
    kill_sandbox,
    new_user_namespace,
    reap,
    set_hostname,
    spawn_init,
    write_id_maps,
    write_own_id_maps,
)
from .sandbox.network import bring_up_loopback
from .sandbox.pid1 import InitProgram, init_program
from .sandbox.rootless import build_rootless_root, no_snapshot
from .spec import BUILTIN_DEFAULTS

SCRATCH_PREFIX = "pytest-isolate-"
# Sandboxes kept ready beside the one in use: two absorb a test shorter than one build.
SPARES = 3
HOME_NAMESPACES: Final = (
    ("mnt", _ffi.CLONE_NEWNS),
    ("net", _ffi.CLONE_NEWNET),
    ("uts", _ffi.CLONE_NEWUTS),
    ("ipc", _ffi.CLONE_NEWIPC),
    ("pid", _ffi.CLONE_NEWPID),  # for our children: a second unshare(CLONE_NEWPID) needs it
)


@dataclass
class Sandbox:
    ident: int
    pid: int
    pidfd: int
    group: Group | None
    problems: list[str]
    ns_fds: list[int] = field(default_factory=list)
    """The namespaces the test joins through the builder's descriptors. Rootless: all of
    ``ROOTLESS_NS_FILES``, opened before its init became non-dumpable (after that, only a
    privileged process may open them, through /proc or its pidfd). As root: the user
    namespace (pid 1 is not in it)."""
    lifeline: int = -1
    """As root: the write end of pid 1's stdin, never written; pid 1 exits once it is
    closed (here, or by the kernel when the builder dies)."""


class Zygote:
    def __init__(
        self,
        sock: socket.socket,
        scratch: str,
        plan: BuildPlan | None = None,
        shares: list[str] | None = None,
    ) -> None:
        self.sock = sock
        self.scratch = scratch
        self.plan = plan or BuildPlan()
        self.pid = os.getpid()
        with open("/proc/self/mountinfo") as f:
            mounts = parse_mountinfo(f.read())
        self.steps: list[MountStep] = plan_mounts(mounts, skip=[scratch])
        self.steps += share_steps(shares or [])  # read-write host paths, over the snapshot
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

    # -- building ---------------------------------------------------------------------------
    def build(self) -> Sandbox:
        """Build one sandbox: its namespaces and snapshot here, then spawn its pid 1 in them.

        The builder enters the new mount, network, UTS and IPC namespaces itself, builds
        the snapshot there and chroots into it; pid 1 is spawned last (a small program:
        see ``sandbox.namespaces``), into those namespaces and a new pid namespace. Then the
        builder goes back to its own namespaces. The user namespace is made first, at home
        (a chrooted process may not make one).
        """
        if self.plan.init_builds:
            return self._build_in_init()
        self.next_id += 1
        group = self.backend.create(str(self.next_id)) if self.backend is not None else None
        reap(self.dying_helpers)
        ns_fds = []
        if self.plan.userns:
            userns, helper = new_user_namespace()
            ns_fds.append(userns)
            self.dying_helpers.append(helper)  # reaped later: no need to wait for it
        try:
            # CLONE_NEWPID applies to our next child only: it becomes pid 1 of the new
            # namespace.
            _ffi.unshare(_ffi.CLONE_NEWPID | SANDBOX_NAMESPACES)
            try:
                problems = build_tree(self.scratch, self.steps)
                bring_up_loopback()
                set_hostname(BUILTIN_DEFAULTS.hostname)  # a test asking for another sets it
                os.chdir(root_of(self.scratch))
                # pid 1's root: the snapshot, not the host under it (the built-in
                # program chroots itself; its file is in no snapshot)
                program = self.init_program
                assert program is not None
                if program.enters_root:
                    enter_root_mount()
                else:
                    enter_root()
                pid, lifeline = spawn_init(program)
            finally:
                self._go_home()
        except BaseException:
            for fd in ns_fds:
                os.close(fd)
            if group is not None:
                try:
                    group.remove(deadline=0)
                except CgroupError:
                    pass  # swept with the rest at the end
            raise
        return Sandbox(self.next_id, pid, os.pidfd_open(pid), group, problems, ns_fds, lifeline)

    def _await_init(self, sandbox: Sandbox, r: int, ack: int = -1) -> Sandbox:
        """Follow pid 1's setup on its pipe until the sandbox is ready ("R", with the
        problems of pid 1's own build, if it built the snapshot). Meanwhile write the uid and
        gid maps of the user namespace it creates: "U" identity, as root; "V" our own ids,
        rootless, then open the sandbox's namespaces for the test and tell pid 1 (on
        ``ack``) that it may stop being dumpable. Anything else is its error: the sandbox
        is destroyed and it is raised."""
        buf = b""
        with os.fdopen(r, "rb") as pipe:
            for line in pipe:
                if line.startswith(b"U"):
                    write_id_maps(sandbox.pid)
                elif line.startswith(b"V"):
                    write_own_id_maps(sandbox.pid)
                    sandbox.ns_fds = [
                        os.open(f"/proc/{sandbox.pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                        for name, _ in ROOTLESS_NS_FILES
                    ]
                    try:
                        os.write(ack, b"A")
                    except BrokenPipeError:
                        pass  # pid 1 died: its pipe ends next, and the error is raised
                elif line.startswith(b"R"):
                    if line[1:].strip():
                        sandbox.problems = json.loads(line[1:])
                    return sandbox
                else:
                    buf += line
        self.destroy(sandbox)
        raise RuntimeError(buf[1:].decode(errors="replace").strip() or "sandbox init died")

    def _go_home(self) -> None:
        """Return to the builder's own namespaces (setns into a mount namespace resets root
        and working directory to that namespace's)."""
        for fd, nstype in self.home:
            _ffi.setns(fd, nstype)

    # -- building in the init: rootless, or without a snapshot -------------------------------
    def _build_in_init(self) -> Sandbox:
        """Build a sandbox whose pid 1 makes its namespaces and mounts itself.

        Rootless, the builder may not setns back into its own namespaces (they belong to
        the initial user namespace), so a helper process unshares the pid namespace, forks
        the init and exits; the init is reparented to us (a child subreaper).
        """
        self.next_id += 1
        group = self.backend.create(str(self.next_id)) if self.backend is not None else None
        r, w = os.pipe()
        ack_r, ack_w = os.pipe()  # the builder's answer to "V": pid 1 may turn non-dumpable
        try:
            pid = self._fork_init_via_helper(r, w, ack_r)
        finally:
            os.close(w)
            os.close(ack_r)
        try:
            pidfd = os.pidfd_open(pid)
            return self._await_init(Sandbox(self.next_id, pid, pidfd, group, []), r, ack_w)
        finally:
            os.close(ack_w)

    def _fork_init_via_helper(self, r: int, w: int, ack: int) -> int:
        pr, pw = os.pipe()
        helper = os.fork()
        if helper == 0:  # pragma: no cover - runs in the helper
            try:
                os.close(r)
                os.close(pr)
                builder = os.pidfd_open(self.pid)
                # Readable once this helper has exited, and so its children were reparented.
                me = os.pidfd_open(os.getpid())
                _ffi.unshare(_ffi.CLONE_NEWPID)
                gc.freeze()
                pid = os.fork()
                if pid == 0:
                    os.close(pw)
                    self._init_builds_main(w, ack, me, builder)
                os.write(pw, str(pid).encode())
            finally:
                os._exit(0)
        os.close(pw)
        with os.fdopen(pr, "rb") as pipe:
            data = pipe.read()
        os.waitpid(helper, 0)
        if not data:
            raise OSError(errno.EPERM, "could not start the sandbox's init")
        return int(data)

    def _init_builds_main(  # pragma: no cover - runs in the child
        self, w: int, ack: int, helper: int, builder: int
    ) -> None:
        gc.disable()
        try:
            self.sock.close()
            # Wait until the helper is gone (we are the builder's child then), and die with
            # the builder from now on, unless it is already gone.
            select.select([helper], [], [])
            os.close(helper)
            _ffi.prctl(_ffi.PR_SET_PDEATHSIG, signal.SIGKILL)
            if select.select([builder], [], [], 0)[0]:
                os._exit(1)
            os.close(builder)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            _ffi.unshare(SANDBOX_NAMESPACES)
            plan = self.plan
            if not plan.overlay:
                problems = no_snapshot(plan.fresh_proc)
            else:
                writable = (os.environ.get("HOME", ""), os.getcwd())
                problems = build_rootless_root(self.scratch, plan.fresh_proc, writable)
            bring_up_loopback()
            set_hostname(BUILTIN_DEFAULTS.hostname)  # a test asking for another sets it
            if plan.userns == "first":
                # A second user namespace, inside the first, that owns none of the sandbox's
                # namespaces: the test joins it last and so holds no capability over the
                # snapshot's mounts (it cannot undo them), as uid 0 cannot as root.
                _ffi.unshare(_ffi.CLONE_NEWUSER)
                os.write(w, b"V\n")
                # The builder writes our uid maps and opens our namespaces for the test
                # through /proc, which it may only while we are dumpable: wait for it.
                if os.read(ack, 1) != b"A":
                    raise RuntimeError("the sandbox builder did not answer")
            if plan.userns == "last":
                _ffi.unshare(_ffi.CLONE_NEWUSER)
                os.write(w, b"U\n")
            _ffi.prctl(_ffi.PR_SET_DUMPABLE, 0)  # the test may not ptrace its init
            _serve_as_init(w, b"R" + json.dumps(problems).encode() + b"\n")
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
            _die_reporting(w, exc)

    def finish(self, sandbox: Sandbox) -> None:
        """Reap a killed init and remove its cgroups."""
        try:
            os.waitpid(sandbox.pid, 0)
        except ChildProcessError:
            pass  # reaped by the kernel: it exited while spawn_init had SIGCHLD ignored
        os.close(sandbox.pidfd)
        for fd in (*sandbox.ns_fds, sandbox.lifeline):
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

    def handle_release(self, ident: int) -> None:
        sandbox = self.active.pop(ident, None)
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
                    self.handle_release(int(message["id"]))
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


def _serve_as_init(w: int, ready: bytes) -> NoReturn:  # pragma: no cover - in pid 1
    """pid 1's setup is done: tell the builder (``ready``: "R", with the problems of its own
    build, if it built the snapshot), keep no descriptor, and reap until killed."""
    os.write(w, ready)
    os.close(w)
    os.closerange(3, 1 << 16)
    init_loop()


def _die_reporting(w: int, exc: BaseException) -> NoReturn:  # pragma: no cover - in pid 1
    """pid 1's setup failed: tell the builder ("E" and the error), then exit."""
    try:
        os.write(w, b"E" + f"{type(exc).__name__}: {exc}".encode() + b"\n")
    finally:
        os._exit(1)


def sweep_scratch(base: str) -> None:
    """Remove the (empty) mount-point directories of runs that are gone."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if name.startswith(SCRATCH_PREFIX) and token_is_stale(name[len(SCRATCH_PREFIX) :] + ".0"):
            try:
                os.rmdir(os.path.join(base, name))
            except OSError:
                pass


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    config = json.loads(sys.argv[1])
    _ffi.prctl(_ffi.PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != config["parent"]:
        return  # pytest died before we could ask to be told
    plan = BuildPlan.from_json(config.get("plan", {}))
    if plan.userns == "first":
        # Rootless: a user namespace of our own first, where we hold the capabilities to
        # build every sandbox (its pid, mount, net, uts and ipc namespaces are owned by it).
        enter_own_userns()
    if plan.init_builds:
        _ffi.prctl(_ffi.PR_SET_CHILD_SUBREAPER, 1)  # the inits of _build_in_init
    os.set_inheritable(config["fd"], False)  # no sandbox's pid 1 may hold it
    sock = socket.socket(fileno=config["fd"])
    base = config["scratch_base"]
    sweep_scratch(base)
    scratch = os.path.join(base, f"{SCRATCH_PREFIX}{owner_token()}")
    os.makedirs(scratch, mode=0o700, exist_ok=True)
    zygote = Zygote(sock, scratch, plan, config.get("shares"))
    if zygote.backend is not None:
        zygote.backend.sweep()
    try:
        zygote.serve()
    except (BrokenPipeError, ConnectionResetError):
        pass  # pytest closed its end while we were building: it is done with us
    finally:
        zygote.close()


if __name__ == "__main__":  # pragma: no cover
    main()
