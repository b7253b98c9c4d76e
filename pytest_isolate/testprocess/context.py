"""What a test process is given: the sandbox to join and the descriptors to use.

Made in pytest's process (``controller.turn``), sent field by field to the fork server
for a test process forked ahead (``forkserver.server``), and read by the test process
itself (``testprocess.enter``, ``testprocess.main``).
"""

from __future__ import annotations

import signal
import struct
from dataclasses import dataclass

from .. import ffi
from ..builder.namespaces import SANDBOX_NAMESPACES
from ..spec import IsolationSpec

# Sent by the parent at the deadline: every thread's Python stack goes to the dump file.
# (macOS has no real-time signals; fork-only isolation uses SIGUSR2 there.)
DUMP_SIGNAL = signal.SIGRTMIN + 10 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2


@dataclass(frozen=True)
class ChildContext:
    report_fd: int
    dump_fd: int
    init_pid: int
    init_pidfd: int
    join_fds: tuple[int, ...]
    hostname: str
    cwd: str
    close_fds: tuple[int, ...]
    report_key: str = ""
    """The report channel's key (``wire.new_key``, in hex), made by pytest's process: the
    frames a test writes to the pipe itself are not reports."""
    rootless: bool = False
    """Join the user namespace first, then the others, then fork once more into the pid
    namespace (pytest itself may not join it)."""
    userns: bool = True
    """False where the host allows no user namespace: the sandbox has none to join."""
    sandboxed: bool = True
    """False for fork-only isolation: no sandbox to join, only a process group of our own."""
    namespaces: int = SANDBOX_NAMESPACES
    """The sandbox's namespaces this test joins (all but net with ``net="host"``)."""
    mount_proc: bool = False
    """Mount the sandbox's /proc: as root with a snapshot, where pid 1 runs no code of its
    own (``pid1``)."""
    ns_fds: tuple[int, ...] = ()
    """The sandbox's namespaces, opened by the builder: rootless, ``ROOTLESS_NS_FILES``; as
    root, its user namespace (none where the host allows none)."""
    turn_fd: int = -1
    """A test process forked ahead (``controller.session.Spare``): once in its sandbox, it
    waits on this pipe for its turn, which names the item after its own (``TURN``)."""
    cpuset: tuple[int, ...] | None = None
    """The CPUs it and every process it starts may run on (``conditions.pin``)."""
    clock_offset: float = 0.0
    """Seconds its monotonic and boot-time clocks are ahead (``conditions.shift_clock``)."""
    noise: int = 0
    """Busy processes to start beside the test (``conditions.start_noise``)."""
    seed: int | None = None
    """``random``'s seed before the test's setup (``conditions.seed``)."""
    before: tuple[int, ...] = ()
    """Items (indexes in ``session.items``) to run first in this process, in this order;
    their reports are sent as ``wire.Kind.PRIOR`` (the flaky-test hunt's order rounds)."""


# The turn message: the index of the next item in ``session.items`` (-1: none).
TURN = struct.Struct("<i")


def conditions_for(spec: IsolationSpec) -> dict[str, object]:
    """The context's fields that carry the spec's conditions for the test process."""
    return {
        "cpuset": spec.cpuset,
        "clock_offset": spec.clock_offset,
        "noise": spec.noise,
        "seed": spec.seed,
    }


def namespaces_for(spec: IsolationSpec) -> int:
    if spec.net == "host":
        return SANDBOX_NAMESPACES & ~ffi.CLONE_NEWNET
    return SANDBOX_NAMESPACES
