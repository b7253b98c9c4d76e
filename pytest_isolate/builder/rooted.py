"""Building a sandbox as root: the builder makes its namespaces and snapshot itself.

The builder enters fresh mount, network, UTS and IPC namespaces, builds the snapshot
there (``snapshot``), brings up ``lo``, enters the snapshot, spawns pid 1 (``pid1``) into
a new pid namespace, and goes back home. The user namespace is made first, at home, and
apart (``namespaces.new_user_namespace``): the test joins it last.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .. import ffi
from ..cgroups import CgroupError
from ..spec import BUILTIN_DEFAULTS
from .namespaces import SANDBOX_NAMESPACES, new_user_namespace, reap, set_hostname, spawn_init
from .network import bring_up_loopback
from .sandbox import Sandbox
from .snapshot import build_tree, enter_root, enter_root_mount, hide_revealing, root_of
from .upper import keep_rooted

if TYPE_CHECKING:
    from .builder import Builder


def build(builder: Builder) -> Sandbox:
    """Build one sandbox: its namespaces and snapshot here, then spawn its pid 1 in them.

    The builder enters the new mount, network, UTS and IPC namespaces itself, builds
    the snapshot there and chroots into it; pid 1 is spawned last (a small program:
    see ``pid1``), into those namespaces and a new pid namespace. Then the
    builder goes back to its own namespaces. The user namespace is made first, at home
    (a chrooted process may not make one).
    """
    builder.next_id += 1
    group = builder.backend.create(str(builder.next_id)) if builder.backend is not None else None
    reap(builder.dying_helpers)
    ns_fds = []
    scratch_fd = -1
    if builder.plan.userns:
        userns, helper = new_user_namespace()
        ns_fds.append(userns)
        builder.dying_helpers.append(helper)  # reaped later: no need to wait for it
    try:
        # CLONE_NEWPID applies to our next child only: it becomes pid 1 of the new
        # namespace.
        ffi.unshare(ffi.CLONE_NEWPID | SANDBOX_NAMESPACES)
        old_root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            problems = build_tree(builder.scratch, builder.steps)
            if builder.plan.diff:
                scratch_fd = keep_rooted(builder.scratch, builder.steps)
            bring_up_loopback()
            set_hostname(BUILTIN_DEFAULTS.hostname)  # a test asking for another sets it
            os.chdir(root_of(builder.scratch))
            # pid 1's root: the snapshot, not the host under it (the built-in
            # program chroots itself; its file is in no snapshot)
            program = builder.init_program
            assert program is not None
            if program.enters_root:
                enter_root_mount()
            else:
                enter_root()
            pid, lifeline = spawn_init(program)  # from /proc/self/fd: the host's /proc
            problems += hide_revealing(old_root, builder.revealing)
        finally:
            os.close(old_root)
            _go_home(builder)
    except BaseException:
        for fd in (*ns_fds, scratch_fd):
            if fd >= 0:
                os.close(fd)
        if group is not None:
            try:
                group.remove(deadline=0)
            except CgroupError:
                pass  # swept with the rest at the end
        raise
    sandbox = Sandbox(builder.next_id, pid, os.pidfd_open(pid), group, problems, ns_fds, lifeline)
    sandbox.scratch_fd = scratch_fd
    return sandbox


def _go_home(builder: Builder) -> None:
    """Return to the builder's own namespaces (setns into a mount namespace resets root
    and working directory to that namespace's)."""
    for fd, nstype in builder.home:
        ffi.setns(fd, nstype)
