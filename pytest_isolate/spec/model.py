"""What one test asks for: a frozen, validated ``IsolationSpec``; and the error a bad
value raises."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final


class SpecError(ValueError):
    """A bad isolation value; ``str()`` is a complete sentence naming its source."""


@dataclass(frozen=True)
class IsolationSpec:
    """What one test asked for. ``None`` means "no cap" (or "not changed")."""

    cpu: float | None = None
    """CPU bandwidth in CPUs: 0.3 is 30% of one CPU, 2 is two CPUs."""
    mem: int | None = None
    """Memory cap in bytes (swap may not extend it)."""
    pids: int | None = 4096
    """Maximum number of tasks (processes and threads) in the sandbox."""
    timeout: float | None = None
    """Seconds before the whole sandbox is killed."""
    hostname: str = "isolated"
    """The sandbox's hostname (its own UTS namespace)."""
    net: str = "private"
    """``private``: a fresh network namespace with only ``lo``; ``host``: the host's network."""
    cpu_period: float | None = None
    """The CPU cap's scheduling period in seconds (the kernel's default: 0.1). A short
    quota in a long period stalls the test for the rest of each period."""
    cpuset: tuple[int, ...] | None = None
    """The CPUs every process of the sandbox may run on; None: all."""
    noise: int = 0
    """Busy processes started beside the test in its sandbox (sharing its caps)."""
    clock_offset: float = 0.0
    """Seconds added to CLOCK_MONOTONIC and CLOCK_BOOTTIME (a time namespace)."""
    seed: int | None = None
    """``random.seed`` (and pytest-randomly's seed) in the test process; None: unchanged."""


BUILTIN_DEFAULTS: Final = IsolationSpec()
SPEC_KEYS: Final = tuple(f.name for f in fields(IsolationSpec))
