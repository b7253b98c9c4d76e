"""The test process joins its sandbox: cgroups, namespaces, /proc, hostname, privileges.

Runs in the child of ``os.fork()`` (or of the fork server) before the test's protocol.
As root, the sandbox's namespaces are joined with ``setns`` through its pid 1's pidfd,
after the cgroups (migration is checked against credentials the user namespace is about
to reduce), and the user namespace last. Rootless, through the builder's descriptors,
then one more fork into the pid namespace (pytest itself may not join it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal

from .. import ffi
from ..builder.namespaces import ROOTLESS_NS_FILES, forbid_cgroup_namespaces, set_hostname
from ..builder.snapshot import mount_proc
from .conditions import shift_clock
from .context import DUMP_SIGNAL, ChildContext

_NS_FILES = (
    ("mnt", ffi.CLONE_NEWNS),
    ("net", ffi.CLONE_NEWNET),
    ("uts", ffi.CLONE_NEWUTS),
    ("ipc", ffi.CLONE_NEWIPC),
)


def _setns_all(ctx: ChildContext, flags: int) -> None:
    try:
        ffi.setns(ctx.init_pidfd, flags)
    except OSError as exc:  # pidfds name namespaces only since Linux 5.8
        if exc.errno != errno.EINVAL:
            raise
        for name, flag in (*_NS_FILES, ("user", ffi.CLONE_NEWUSER)):
            if flags & flag:
                fd = os.open(f"/proc/{ctx.init_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    ffi.setns(fd, flag)
                finally:
                    os.close(fd)


def _become_sandbox_pid(ctx: ChildContext) -> None:
    """Fork once more: the new child is born in the sandbox's pid namespace and goes on as
    the test process; this one waits for it and exits the same way (for the controller)."""
    pid = os.fork()
    if pid == 0:
        return
    for fd in ctx.join_fds:
        os.close(fd)
    for sig in (DUMP_SIGNAL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: os.kill(pid, signum))
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


# ioctl on a namespace file: the parent user namespace, as a new file descriptor.
NS_GET_PARENT = 0xB702


def _enter_rootless(ctx: ChildContext) -> None:
    # Unprivileged, we hold capabilities over the sandbox's namespaces only from inside the
    # user namespace that owns them (the parent of init's own): join it first, then the
    # others, then init's inner user namespace, which owns none of them; then fork into the
    # pid namespace. Through the builder's descriptors: init is not dumpable, so neither
    # its pidfd nor /proc/<init>/ns lets us in.
    fds = dict(zip((name for name, _ in ROOTLESS_NS_FILES), ctx.ns_fds, strict=True))
    try:
        outer = fcntl.ioctl(fds["user"], NS_GET_PARENT)
        try:
            ffi.setns(outer, ffi.CLONE_NEWUSER)
        finally:
            os.close(outer)
        if ctx.clock_offset:  # while this process still sees itself in /proc
            shift_clock(ctx.clock_offset)
        for name, flag in ROOTLESS_NS_FILES[1:]:
            if flag & (ctx.namespaces | ffi.CLONE_NEWPID):
                ffi.setns(fds[name], flag)
        set_hostname(ctx.hostname)
        ffi.setns(fds["user"], ffi.CLONE_NEWUSER)
    finally:
        for fd in ctx.ns_fds:
            os.close(fd)
    _become_sandbox_pid(ctx)
    for fd in ctx.join_fds:  # migration is checked against our (unchanged) uid
        os.write(fd, b"0")
        os.close(fd)


def _own_session_keyring() -> None:
    """A fresh anonymous session keyring: what the test adds to its session keyring stays
    with it, and pytest's (pam_keyinit's, inherited) is out of its reach."""
    try:
        ffi.join_session_keyring()
    except OSError as exc:
        if exc.errno != errno.ENOSYS:  # ENOSYS: a kernel without keyrings, nothing to share
            raise


def enter_sandbox(ctx: ChildContext) -> None:
    _own_session_keyring()
    if not ctx.sandboxed:
        # Fork-only isolation: a session and process group of our own, so that what the test
        # starts can be killed with it, and without pytest's controlling terminal.
        os.setsid()
        if ctx.clock_offset:
            shift_clock(ctx.clock_offset)  # says why it cannot, where namespaces are refused
        return
    if ctx.rootless:
        _enter_rootless(ctx)
    else:
        _enter_rooted(ctx)
    # A session (and so a process group) of its own, without a controlling terminal: the
    # test's kill(0), setpriority(PRIO_PGRP, 0) or ioprio_set(IOPRIO_WHO_PGRP, 0) reach
    # the sandbox only, never pytest; /dev/tty cannot be opened, and no terminal accepts
    # its keystrokes (TIOCSTI). Terminal signals (Ctrl-C) go to pytest, which ends the test.
    os.setsid()
    # Changing credentials cleared both; the test is an ordinary process again.
    ffi.prctl(ffi.PR_SET_PDEATHSIG, signal.SIGKILL)
    ffi.prctl(ffi.PR_SET_DUMPABLE, 1)
    # As in bubblewrap: exec never grants privileges again (setuid bits, file capabilities).
    ffi.prctl(ffi.PR_SET_NO_NEW_PRIVS, 1)
    try:
        os.chdir(ctx.cwd)
    except OSError:
        os.chdir("/")


def _enter_rooted(ctx: ChildContext) -> None:
    if ctx.clock_offset:
        shift_clock(ctx.clock_offset)
    # cgroups first: migration is checked against our credentials, which the user
    # namespace is about to reduce. (The builder opened the files for us.)
    for fd in ctx.join_fds:
        os.write(fd, b"0")
        os.close(fd)
    _setns_all(ctx, ctx.namespaces)
    # procfs shows the pid namespace of whoever mounts it: ours, in which we were
    # born. Still real root here, so the test cannot undo it.
    sysctl = mount_proc("") if ctx.mount_proc else -1
    set_hostname(ctx.hostname)
    try:
        if ctx.userns and ctx.ns_fds:  # made by the builder; pid 1 is not in it
            ffi.setns(ctx.ns_fds[0], ffi.CLONE_NEWUSER)
        elif ctx.userns:  # made by pid 1 (no snapshot)
            _setns_all(ctx, ffi.CLONE_NEWUSER)
        if ctx.userns and sysctl >= 0:
            forbid_cgroup_namespaces(sysctl)
    finally:
        for fd in ctx.ns_fds:
            os.close(fd)
        if sysctl >= 0:
            os.close(sysctl)
