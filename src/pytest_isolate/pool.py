"""Parent side of the sandbox builder (``zygote.py``): ask for a ready sandbox, give it back.

The builder always has the next sandbox ready, so ``acquire`` normally returns at
once. ``release`` does not wait: the builder destroys the sandbox while pytest logs
the reports, and ``settle`` (called before the next test and at the end of the
session) waits until every released sandbox is really gone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .cgroups import Group
from .cgroups.v1 import GroupV1

_BOOT = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[2]); "
    "from pytest_isolate.zygote import main; main()"
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


class SandboxPool:
    def __init__(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = parent
        config = {
            "parent": os.getpid(),
            "fd": child.fileno(),
            "scratch_base": tempfile.gettempdir(),
        }
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _BOOT, json.dumps(config), json.dumps(sys.path)],
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self._pending = 0
        self.leftovers: list[int] = []
        self._hello: dict[str, Any] | None = None
        self.closed = False

    @property
    def fds(self) -> list[int]:
        """Descriptors a forked test process must close."""
        return [self._sock.fileno()]

    def _recv(self) -> tuple[dict[str, Any], list[int]]:
        try:
            data, fds, _, _ = socket.recv_fds(self._sock, 1 << 16, 16)
        except OSError as exc:
            raise PoolError(f"lost the sandbox builder: {exc}") from None
        if not data:
            code = self._proc.poll()
            raise PoolError(f"the sandbox builder exited (status {code})")
        message: dict[str, Any] = json.loads(data)
        if message["op"] == "hello":
            self._hello = message
            return self._recv()
        return message, fds

    def hello(self) -> dict[str, Any]:
        """What the builder found at startup (swept leftovers, cgroup version)."""
        while self._hello is None:
            message, fds = self._recv()
            self._handle_async(message, fds)
        return self._hello

    def _handle_async(self, message: dict[str, Any], fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
        if message["op"] == "released":
            self._pending -= 1
            self.leftovers += message.get("leftovers", [])
        else:
            raise PoolError(f"unexpected message from the sandbox builder: {message}")

    def settle(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` released sandboxes are still being destroyed."""
        while self._pending > keep:
            message, fds = self._recv()
            self._handle_async(message, fds)

    def acquire(self) -> Lease:
        self._sock.send(b'{"op":"get"}')
        while True:
            message, fds = self._recv()
            if message["op"] == "ready":
                group = GroupV1(message["group"], message["cgroup"]) if message["cgroup"] else None
                problems = message["problems"]
                return Lease(message["id"], message["pid"], fds[0], group, problems, fds[1:])
            if message["op"] == "error":
                raise PoolError(f"could not build the sandbox: {message['message']}")
            self._handle_async(message, fds)

    def release(self, lease: Lease) -> None:
        os.close(lease.pidfd)
        for fd in lease.join_fds:
            os.close(fd)
        lease.join_fds = []
        self._sock.send(json.dumps({"op": "release", "id": lease.ident}).encode())
        self._pending += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.settle()
            self._sock.send(b'{"op":"quit"}')
        except (OSError, PoolError):
            pass
        self._sock.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
