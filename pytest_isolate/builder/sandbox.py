"""The builder's record of one sandbox it built: its pid 1, cgroups and descriptors."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cgroups import Group


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
    scratch_fd: int = -1
    """With ``--isolate-diff``: the sandbox's scratch tmpfs (``O_PATH``), whose upper layers
    are read when its test is done (``upper.changes``)."""
