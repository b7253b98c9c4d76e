"""Building a sandbox whose pid 1 makes its namespaces and mounts itself: rootless, or
where the host allows no overlay snapshot.

Rootless, the builder may not setns back into its own namespaces (they belong to the
initial user namespace), so a helper process unshares the pid namespace, forks the
init and exits; the init is reparented to the builder (a child subreaper). The init,
a fork of the builder, unshares the other namespaces, builds the snapshot
(``snapshot_rootless``), makes the inner user namespace, tells the builder over a pipe
("V"/"U": write my id maps; "R": ready, with the mounts it could not snapshot; "E": an
error) and then serves as the sandbox's init (``pid1.python_init``).
"""

from __future__ import annotations

import errno
import gc
import json
import os
import select
import signal
from typing import TYPE_CHECKING

from .. import ffi
from ..pid1.python_init import die_reporting, serve_as_init
from ..spec import BUILTIN_DEFAULTS
from .namespaces import (
    ROOTLESS_NS_FILES,
    SANDBOX_NAMESPACES,
    set_hostname,
    write_id_maps,
    write_own_id_maps,
)
from .network import bring_up_loopback
from .sandbox import Sandbox
from .snapshot_rootless import build_rootless_root, no_snapshot

if TYPE_CHECKING:
    from .builder import Builder


def build(builder: Builder) -> Sandbox:
    """Build one sandbox: fork its pid 1, which builds the rest, and wait until it is ready."""
    builder.next_id += 1
    group = builder.backend.create(str(builder.next_id)) if builder.backend is not None else None
    r, w = os.pipe()
    ack_r, ack_w = os.pipe()  # the builder's answer to "V": pid 1 may turn non-dumpable
    try:
        pid = _fork_init_via_helper(builder, r, w, ack_r)
    finally:
        os.close(w)
        os.close(ack_r)
    try:
        pidfd = os.pidfd_open(pid)
        return _await_init(builder, Sandbox(builder.next_id, pid, pidfd, group, []), r, ack_w)
    finally:
        os.close(ack_w)


def _await_init(builder: Builder, sandbox: Sandbox, r: int, ack: int = -1) -> Sandbox:
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
                if line[1:].strip():  # its scratch tmpfs's descriptor (--isolate-diff)
                    sandbox.scratch_fd = os.open(
                        f"/proc/{sandbox.pid}/fd/{int(line[1:])}",
                        os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                    )
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
    builder.destroy(sandbox)
    raise RuntimeError(buf[1:].decode(errors="replace").strip() or "sandbox init died")


def _fork_init_via_helper(builder: Builder, r: int, w: int, ack: int) -> int:
    pr, pw = os.pipe()
    helper = os.fork()
    if helper == 0:  # pragma: no cover - runs in the helper
        try:
            os.close(r)
            os.close(pr)
            builder_fd = os.pidfd_open(builder.pid)
            # Readable once this helper has exited, and so its children were reparented.
            me = os.pidfd_open(os.getpid())
            ffi.unshare(ffi.CLONE_NEWPID)
            gc.freeze()
            pid = os.fork()
            if pid == 0:
                os.close(pw)
                _init_main(builder, w, ack, me, builder_fd)
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


def _init_main(  # pragma: no cover - runs in the sandbox's pid 1
    builder: Builder, w: int, ack: int, helper: int, builder_fd: int
) -> None:
    """pid 1 (a fork of the builder): make the namespaces and the snapshot, tell the
    builder, then serve as the sandbox's init (``pid1.python_init``)."""
    gc.disable()
    try:
        builder.sock.close()
        # Wait until the helper is gone (we are the builder's child then), and die with
        # the builder from now on, unless it is already gone.
        select.select([helper], [], [])
        os.close(helper)
        ffi.prctl(ffi.PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([builder_fd], [], [], 0)[0]:
            os._exit(1)
        os.close(builder_fd)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        ffi.unshare(SANDBOX_NAMESPACES)
        plan = builder.plan
        scratch_fd = -1
        if not plan.overlay:
            problems = no_snapshot(plan.fresh_proc)
        else:
            writable = (os.environ.get("HOME", ""), os.getcwd())
            stand_ins = builder.stand_ins
            problems, scratch_fd = build_rootless_root(
                builder.scratch, plan.fresh_proc, writable, stand_ins.entries, plan.diff
            )
            problems += stand_ins.problems()
        bring_up_loopback()
        set_hostname(BUILTIN_DEFAULTS.hostname)  # a test asking for another sets it
        if plan.userns == "first":
            # A second user namespace, inside the first, that owns none of the sandbox's
            # namespaces: the test joins it last and so holds no capability over the
            # snapshot's mounts (it cannot undo them), as uid 0 cannot as root.
            ffi.unshare(ffi.CLONE_NEWUSER)
            os.write(w, b"V%s\n" % (str(scratch_fd).encode() if scratch_fd >= 0 else b""))
            # The builder writes our uid maps and opens our namespaces (and scratch) for
            # the test through /proc, which it may only while we are dumpable: wait.
            if os.read(ack, 1) != b"A":
                raise RuntimeError("the sandbox builder did not answer")
        if scratch_fd >= 0:
            os.close(scratch_fd)
        if plan.userns == "last":
            ffi.unshare(ffi.CLONE_NEWUSER)
            os.write(w, b"U\n")
        ffi.prctl(ffi.PR_SET_DUMPABLE, 0)  # the test may not ptrace its init
        serve_as_init(w, b"R" + json.dumps(problems).encode() + b"\n")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
        die_reporting(w, exc)
