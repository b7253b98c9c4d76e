"""Namespace steps, and the sandbox's pid 1.

As root, the builder makes the sandbox's namespaces and its snapshot itself, then
starts pid 1 in them; the test process only has to join:

    builder: new user namespace (held by an fd) -> unshare(PID|NS|NET|UTS|IPC)
             -> lo up -> hostname -> overlay moved over /
             -> spawn pid 1 (``pid1``: it reads a pipe only the builder writes to; it
                chroots into the snapshot) -> back home
    test:    (forked by pytest into the new pid namespace)
             join the cgroups -> setns(NS|NET|UTS|IPC) -> mount /proc -> hostname
             -> setns(USER)

pid 1 is a small program (``pid1``), not a fork of the builder: spawning it (vfork +
exec) costs a fraction of forking a Python process and the copy-on-write faults both
sides take after. It needs no code of its own: it inherits SIGCHLD ignored, so the
kernel reaps every orphan reparented to it; it ignores SIGINT (the terminal's Ctrl-C is
pytest's to handle), and as pid 1 it gets no other signal from inside its
namespace; it exits at EOF on its stdin, that is when the builder exits, however it
dies. When pid 1 exits, the kernel kills everything left in the namespace: no daemon,
orphan or grandchild of a test outlives it.

The user namespace is made apart (``new_user_namespace``) and owns none of the
others: uid 0 inside holds no capability over the sandbox's mounts, network,
hostname, the host's devices, modules or /proc/sys. (Creating it together with the
other namespaces would make ``lowerdir=/`` fail, and would give the test the right
to undo its own mounts.) pid 1 stays outside it, so the test may neither ptrace nor
inspect its pid 1 (/proc/1/root, /proc/1/fd): those need a capability in pid 1's
user namespace.

Rootless, pid 1 is a fork of the builder that builds the sandbox itself
(``pid1.python_init``): see ``builder.in_init``.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Final

from .. import ffi
from ..pid1.program import InitProgram

SANDBOX_NAMESPACES: Final = ffi.CLONE_NEWNS | ffi.CLONE_NEWNET | ffi.CLONE_NEWUTS | ffi.CLONE_NEWIPC
# A rootless sandbox's namespaces, in the order the builder opens them for the test (its
# user namespace first; the pid namespace is init's own).
ROOTLESS_NS_FILES: Final = (
    ("user", ffi.CLONE_NEWUSER),
    ("mnt", ffi.CLONE_NEWNS),
    ("net", ffi.CLONE_NEWNET),
    ("uts", ffi.CLONE_NEWUTS),
    ("ipc", ffi.CLONE_NEWIPC),
    ("pid", ffi.CLONE_NEWPID),
)
# Maps every uid/gid to itself: files keep their owners, and root inside is uid 0.
IDENTITY_MAP: Final = "0 0 4294967295\n"


def write_id_maps(pid: int) -> None:
    """Give ``pid``'s new user namespace the identity mapping (needs CAP_SETUID outside)."""
    for name in ("uid_map", "gid_map"):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY)
        try:
            os.write(fd, IDENTITY_MAP.encode())
        finally:
            os.close(fd)


def write_own_id_maps(pid: int) -> None:
    """Map ``pid``'s new user namespace onto exactly the ids ours maps, one to one.

    Rootless, our own user namespace maps just our uid and gid: the sandbox's inner user
    namespace gets those, unchanged (the writer needs CAP_SETUID in ours, which it holds).
    """
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/self/{name}") as f:
            ranges = [line.split() for line in f if line.strip()]
        data = "".join(f"{inside} {inside} {count}\n" for inside, _, count in ranges)
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)


def new_user_namespace() -> tuple[int, int]:
    """A new user namespace with the identity mapping, as a descriptor the test joins; and
    the pid of the child that made it, killed but maybe not yet reaped (``reap``).

    A child sharing our memory creates it (``ffi.clone_waiting``), is opened through
    /proc and killed: the descriptor alone keeps the namespace. Needs CAP_SETUID and
    CAP_SETGID, and a root that is not chrooted.
    """
    pid = ffi.clone_waiting(ffi.CLONE_NEWUSER)
    try:
        write_id_maps(pid)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC), pid
    finally:
        os.kill(pid, signal.SIGKILL)


def forbid_cgroup_namespaces(sysctl: int) -> None:
    """No cgroup namespace may be made in the user namespace we are in, nor in any below it.

    ``sysctl``: a descriptor of a writable /proc/sys (``snapshot.mount_proc``). Its
    ``user.max_cgroup_namespaces`` is that of the user namespace looking it up, and the
    kernel checks the limit of every ancestor. Without a cgroup namespace of its own no
    cgroup filesystem can be mounted; and uid 0 inside, being the host's, may write every
    file of one: in its own group (lifting the caps), and at the root of the hierarchies
    it is not capped in.
    """
    try:
        fd = os.open("user/max_cgroup_namespaces", os.O_WRONLY | os.O_CLOEXEC, dir_fd=sysctl)
    except FileNotFoundError:  # a kernel without cgroups: none to mount
        return
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def reap(pids: list[int], wait: bool = False) -> None:
    """Remove from ``pids`` the children of ours that are gone (reaping them); with
    ``wait``, all of them, once they are."""
    for pid in list(pids):
        try:
            if os.waitpid(pid, 0 if wait else os.WNOHANG)[0] == 0:
                continue
        except ChildProcessError:
            pass  # reaped by the kernel, while spawn_init had SIGCHLD ignored
        pids.remove(pid)


def spawn_init(program: InitProgram) -> tuple[int, int]:
    """Start a sandbox's pid 1 (``program``, see ``pid1``) in the pid namespace of our
    next child; return its pid and its lifeline, the pipe end it reads (EOF: exit).

    It inherits SIGCHLD ignored (so that orphans never stay zombies) and SIGINT ignored;
    stdout and stderr are /dev/null, and every other descriptor of ours is close-on-exec.
    """
    r, w = os.pipe()
    actions = [
        (os.POSIX_SPAWN_DUP2, r, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    # Briefly ours too: a child of ours that exits meanwhile (a released sandbox's pid 1)
    # is reaped by the kernel, and so ``Builder.finish`` accepts ECHILD.
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        pid = os.posix_spawn(program.file, program.argv, {}, file_actions=actions, setsigmask=())
    except BaseException:
        os.close(w)
        raise
    finally:
        signal.signal(signal.SIGCHLD, previous)
        os.close(r)
    return pid, w


def kill_sandbox(init_pidfd: int) -> None:
    """SIGKILL a sandbox's init; the kernel then kills everything left in its namespace."""
    try:
        signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass


def set_hostname(name: str) -> None:
    if socket.gethostname() != name:
        socket.sethostname(name)
