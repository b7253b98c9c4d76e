"""The sandbox builder's client in pytest's process: ask for a ready sandbox, give it back.

The builder always has the next sandbox ready, so ``acquire`` normally returns at
once. ``release`` does not wait: the builder destroys the sandbox while pytest logs
the reports, and ``settle`` (called before the next test and at the end of the
session) waits until every released sandbox is really gone.
"""

from __future__ import annotations

import collections
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..builder.plan import BuildPlan
from ..cgroups import Group
from ..cgroups.detect import attach
from .changes import Changes

# Where this package is, first on the builder's path: an editable install finds it with
# an import hook that ``python -S`` does not load.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
BUILDER_MODULE = "pytest_isolate.builder.main"
"""The builder's entry point; its command line names it (how tests find the builder)."""
_BOOT = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[2]); "
    f"from {BUILDER_MODULE} import main; main()"
)


class PoolError(RuntimeError):
    """The sandbox builder failed or died; the message says why."""


@dataclass
class Lease:
    ident: int
    pid: int
    pidfd: int
    group: Group | None
    problems: list[str] = field(default_factory=list)
    join_fds: list[int] = field(default_factory=list)
    """Open cgroup files the test process writes "0" to, to join the sandbox's cgroups."""
    ns_fds: list[int] = field(default_factory=list)
    """Rootless: the sandbox's namespaces, opened by the builder (its init is not dumpable,
    so the unprivileged test process could not open them)."""

    @property
    def fds(self) -> list[int]:
        return [self.pidfd, *self.ns_fds, *self.join_fds]


class SandboxPool:
    def __init__(self, plan: BuildPlan | None = None, shares: Sequence[str] = ()) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = parent
        self.diff = (plan or BuildPlan()).diff
        self._changes: dict[int, Changes] = {}
        config = {
            "plan": (plan or BuildPlan()).to_json(),
            "parent": os.getpid(),
            "fd": child.fileno(),
            "scratch_base": tempfile.gettempdir(),
            "shares": list(shares),  # host paths bound read-write into every sandbox
        }
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _BOOT,
                json.dumps(config),
                json.dumps([_PACKAGE_PARENT, *sys.path]),
            ],
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self._pending = 0
        self._ready: collections.deque[Lease] = collections.deque()
        self._error: str | None = None
        self.closed = False

    @property
    def fds(self) -> list[int]:
        """Descriptors a forked test process must close (ours, and other sandboxes')."""
        fds = [self._sock.fileno()]
        for lease in self._ready:
            fds += lease.fds
        return fds

    def _recv(self) -> tuple[dict[str, Any], list[int]]:
        try:
            data, fds, _, _ = socket.recv_fds(self._sock, 1 << 16, 16)
        except OSError as exc:
            raise PoolError(f"lost the sandbox builder: {exc}") from None
        if not data:
            code = self._proc.poll()
            raise PoolError(f"the sandbox builder exited (status {code})")
        message: dict[str, Any] = json.loads(data)
        return message, fds

    def _handle(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message["op"]
        if op == "ready":
            group = attach(message["group"], message["cgroup"]) if message["cgroup"] else None
            problems = message["problems"]
            n = 1 + int(message.get("namespaces", 0))
            lease = Lease(message["id"], message["pid"], fds[0], group, problems, fds[n:], fds[1:n])
            self._ready.append(lease)
            return
        for fd in fds:
            os.close(fd)
        if op == "released":
            self._pending -= 1
        elif op == "changes":
            self._changes[int(message["id"])] = Changes.from_message(message)
        elif op == "error":
            self._error = str(message["message"])
        else:
            raise PoolError(f"unexpected message from the sandbox builder: {message}")

    def _poll(self) -> None:
        """Take in whatever the builder has sent, without waiting."""
        while select.select([self._sock], [], [], 0)[0]:
            self._handle(*self._recv())

    def dying(self) -> int:
        """How many released sandboxes are still being destroyed, as far as we know now."""
        self._poll()
        return self._pending

    def settle(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` released sandboxes are still being destroyed."""
        self._poll()
        while self._pending > keep:
            self._handle(*self._recv())

    def acquire(self) -> Lease:
        """A ready sandbox: normally already here, built while the last test ran."""
        self._poll()
        while not self._ready:
            if self._error is not None:
                error, self._error = self._error, None
                self._sock.send(b'{"op":"retry"}')
                raise PoolError(f"could not build the sandbox: {error}")
            self._handle(*self._recv())
        return self._ready.popleft()

    @property
    def pid(self) -> int:
        """The builder's process id."""
        return self._proc.pid

    def fileno(self) -> int:
        """Readable when the builder has sent something (``take_ready`` takes it in)."""
        return self._sock.fileno()

    def take_ready(self) -> Lease | None:
        """A sandbox that is ready this moment, or None; never waits."""
        self._poll()
        return self._ready.popleft() if self._ready else None

    def release(self, lease: Lease, diff: bool = False) -> Changes | None:
        """Give a sandbox back. With ``diff`` (the plan must keep upper layers): wait for
        what its test changed in the snapshot, read before it is destroyed."""
        for fd in lease.fds:
            os.close(fd)
        lease.join_fds = []
        lease.ns_fds = []
        message = {"op": "release", "id": lease.ident, "diff": diff and self.diff}
        self._sock.send(json.dumps(message).encode())
        self._pending += 1
        if not message["diff"]:
            return None
        while lease.ident not in self._changes:
            self._handle(*self._recv())
        return self._changes.pop(lease.ident)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.settle()
            self._sock.send(b'{"op":"quit"}')
        except (OSError, PoolError):
            pass
        while self._ready:
            lease = self._ready.popleft()
            for fd in lease.fds:
                os.close(fd)
        self._sock.close()
        try:
            _wait_exit(self._proc, 30.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """``proc.wait(timeout)``, woken by the exit itself: ``Popen.wait`` with a timeout polls
    with sleeps of up to 50 ms, added to the end of every session."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # already reaped, or no pidfds (Linux < 5.3)
        proc.wait(timeout=timeout)
        return
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    proc.wait(timeout=0.1)
