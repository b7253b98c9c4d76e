"""Namespace steps, and the sandbox's pid 1.

The sandbox is built ahead of time by an *init* process (pid 1 of a fresh pid
namespace), so that the test process only has to join it:

    init:  unshare(NS|NET|UTS|IPC) -> overlay moved over / -> lo up -> hostname
           -> unshare(USER) (last: see below) -> wait, reaping orphans
    test:  (forked by pytest into init's pid namespace)
           join init's cgroups -> setns(NS|NET|UTS|IPC) -> hostname -> setns(USER)

The user namespace is created after the mounts and owns none of the other
namespaces: uid 0 inside holds no capability over the sandbox's mounts, network,
hostname, the host's devices, modules or /proc/sys. (Creating it together with the
other namespaces would make ``lowerdir=/`` fail, and would give the test the right
to undo its own mounts.)

pid 1 ignores every signal it has no handler for, even SIGTERM from outside, so
init forwards the usual termination signals to the rest of the namespace. When
init exits, the kernel kills everything left in the namespace: no daemon, orphan
or grandchild of a test outlives it.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Final, NoReturn

from .. import _ffi

SANDBOX_NAMESPACES: Final = (
    _ffi.CLONE_NEWNS | _ffi.CLONE_NEWNET | _ffi.CLONE_NEWUTS | _ffi.CLONE_NEWIPC
)
# A rootless sandbox's namespaces, in the order the builder opens them for the test (its
# user namespace first; the pid namespace is init's own).
ROOTLESS_NS_FILES: Final = (
    ("user", _ffi.CLONE_NEWUSER),
    ("mnt", _ffi.CLONE_NEWNS),
    ("net", _ffi.CLONE_NEWNET),
    ("uts", _ffi.CLONE_NEWUTS),
    ("ipc", _ffi.CLONE_NEWIPC),
    ("pid", _ffi.CLONE_NEWPID),
)
FORWARDED: Final = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
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


def kill_sandbox(init_pidfd: int) -> None:
    """SIGKILL a sandbox's init; the kernel then kills everything left in its namespace."""
    try:
        signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass


def set_hostname(name: str) -> None:
    if socket.gethostname() != name:
        socket.sethostname(name)


def init_loop() -> NoReturn:
    """pid 1: reap every child (orphans are reparented here), forward signals. Never returns."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches the test itself
    waited = {signal.SIGCHLD, *FORWARDED}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    while True:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            try:
                os.kill(-1, info.si_signo)  # everyone in the namespace but init
            except ProcessLookupError:
                pass
