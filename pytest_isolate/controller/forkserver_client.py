"""The fork server's client, in pytest's process: start it, ask for a fork, stop it.

See ``forkserver`` for why test processes forked ahead come from a fork server.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from ..forkserver.protocol import ANSWER, PLAIN_FIELDS, REQUEST
from ..forkserver.server import serve
from ..testprocess.context import ChildContext
from .forking import fork_quietly


@dataclass
class ForkServer:
    pid: int
    sock: socket.socket
    fixture_runs: int
    """``_compat.fixture_runs`` when it started: the state of pytest it holds a copy of."""

    @classmethod
    def start(cls, items: Sequence[pytest.Item], close: Sequence[int], runs: int) -> ForkServer:
        """Fork the server; ``close``: pytest's descriptors it must not keep (sandboxes',
        the builder's). Every item's location is worked out first, once for both."""
        for item in items:
            _ = item.location
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        gc.freeze()  # neither the server nor its children collect (and so copy) our heap
        try:
            pid = fork_quietly()
        finally:
            gc.unfreeze()
        if pid == 0:  # pragma: no cover - the server
            try:
                ours.close()
                for fd in close:
                    os.close(fd)
                gc.freeze()
                serve(theirs, items)
            finally:
                os._exit(0)
        theirs.close()
        return cls(pid, ours, runs)

    def fork(self, index: int, ctx: ChildContext, pidns: bool) -> int:
        """A test process for ``items[index]`` with ``ctx`` (its descriptors are sent; the
        caller keeps and closes its own). ``pidns``: born in the pid namespace of
        ``ctx.init_pidfd``. Raises OSError if the server is gone or could not fork."""
        plain = {name: getattr(ctx, name) for name in PLAIN_FIELDS}
        fds = [ctx.report_fd, ctx.init_pidfd, ctx.turn_fd, *ctx.join_fds, *ctx.ns_fds]
        head = REQUEST.pack(index, pidns, len(ctx.join_fds), len(ctx.ns_fds))
        socket.send_fds(self.sock, [head + json.dumps(plain).encode()], fds)
        answer = self.sock.recv(ANSWER.size)
        if len(answer) != ANSWER.size:
            raise OSError("the fork server is gone")
        (pid,) = ANSWER.unpack(answer)
        if pid < 0:
            raise OSError(-pid, f"{os.strerror(-pid)} (fork server)")
        return int(pid)

    def stop(self) -> None:
        self.sock.close()  # it leaves at EOF
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
