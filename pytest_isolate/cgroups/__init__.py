"""cgroup caps and accounting: the data types and the backend interface.

One backend per cgroup version (``v1``, ``v2``; ``v2_delegation`` for a cgroup v2 base
delegated to an ordinary user); ``detect`` picks the one the host's controllers are
mounted for. A backend creates one group per sandbox under a directory named
``PREFIX`` at the top of each hierarchy, named after its owner (``owners``), so that a
later run can find and sweep what a killed run left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

PREFIX: Final = "pytest-isolate"


class CgroupError(OSError):
    """A cgroup operation failed; the message names the file."""


@dataclass(frozen=True)
class Limits:
    cpu: float | None = None
    """CPUs: the quota is ``cpu`` times the period."""
    mem: int | None = None
    pids: int | None = None
    cpu_period: float | None = None
    """Seconds; None: the kernel's default of 100 ms."""

    def cpu_quota_us(self) -> tuple[int, int]:
        """(quota, period) in microseconds, for a cpu cap (``cpu`` must be set)."""
        period = round((self.cpu_period or 0.1) * 1_000_000)
        return max(1000, round((self.cpu or 0) * period)), period


@dataclass(frozen=True)
class Usage:
    """What one sandbox consumed, read from the cgroup counters.

    ``None`` means the host cannot measure that figure.
    """

    cpu_user: float = 0.0
    """Seconds of user-mode CPU."""
    cpu_system: float = 0.0
    """Seconds of kernel-mode CPU."""
    peak_mem: int | None = None
    """Peak memory charged to the sandbox, bytes."""
    oom_kills: int = 0
    nr_throttled: int = 0
    """Scheduler periods in which the CPU cap throttled the sandbox."""
    throttled: float = 0.0
    """Seconds the sandbox spent throttled."""
    peak_pids: int | None = None
    pids_limit_hits: int = 0
    """Forks refused because of the pids cap."""


class Group(Protocol):
    """One sandbox's cgroup(s) (one directory per v1 hierarchy; one directory on v2)."""

    name: str

    def dirs(self) -> dict[str, str]:
        """Controller -> this group's directory in that controller's hierarchy (v2: also
        the key ``cgroup2``, present even when no controller is enabled)."""

    def pids(self) -> set[int]:
        """Processes in the group."""

    def procs_files(self) -> list[str]:
        """The files a single-threaded process writes ``0`` to, to join the group."""

    def needed_joins(self, limits: Limits) -> list[bool]:
        """For each of ``procs_files()``: whether a test with these caps must join it.

        Accounting needs every hierarchy but one holding only a cap nobody asked for.
        """

    def set_limits(self, limits: Limits) -> None: ...

    def read_usage(self) -> Usage: ...

    def kill(self) -> None:
        """SIGKILL every process left in the group, until it is empty."""

    def remove(self, deadline: float = 5.0) -> None:
        """Remove the group's directories (it must be empty; EBUSY is retried until
        ``deadline`` seconds have passed)."""


class CgroupBackend(Protocol):
    version: int
    controllers: frozenset[str]

    def create(self, name: str) -> Group: ...

    def hierarchies(self) -> list[str]:
        """The mount points the groups are created under."""

    def sweep(self) -> list[str]:
        """Kill and remove groups left by runs whose process is gone; return their paths."""
