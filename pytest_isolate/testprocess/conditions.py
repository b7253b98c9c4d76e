"""Conditions a test process sets up for its test, as its spec asks: the CPUs it may run
on, a shifted monotonic clock, busy processes beside it, the random seed.

The flaky-test hunt varies these; a test may ask for them in its marker too. Each
applies to every process of the sandbox the test starts afterwards.
"""

from __future__ import annotations

import os
import random

import pytest

from .. import ffi


class ConditionError(RuntimeError):
    """A condition the spec asks for cannot be set up here; the message says why (the test
    fails with it, without a traceback of pytest-isolate's own)."""


# The clocks a time namespace shifts (the others, CLOCK_REALTIME among them, are the host's).
SHIFTED_CLOCKS = ("monotonic", "boottime")
_BUSY_LOOPS = 'i=0; while [ "$i" -lt "$1" ]; do (while :; do :; done) & i=$((i + 1)); done'


def pin(cpus: tuple[int, ...]) -> None:
    """Run on these CPUs only, with every process started from here on."""
    os.sched_setaffinity(0, cpus)


def shift_clock(offset: float) -> None:
    """Enter a new time namespace whose monotonic and boot-time clocks read ``offset``
    seconds more than the host's. Needs CAP_SYS_ADMIN (the test process still holds it
    before it joins the sandbox's user namespace) and a single-threaded process."""
    seconds = int(offset // 1)
    nanoseconds = min(999_999_999, round((offset - seconds) * 1e9))
    lines = "".join(f"{clock} {seconds} {nanoseconds}\n" for clock in SHIFTED_CLOCKS)
    try:
        ffi.unshare(ffi.CLONE_NEWTIME)
        # The offsets of the namespace our children (and we, after setns) will be in; the
        # kernel refuses one that would make a clock negative.
        with open("/proc/self/timens_offsets", "w") as f:
            f.write(lines)
        fd = os.open("/proc/self/ns/time_for_children", os.O_RDONLY | os.O_CLOEXEC)
        try:
            ffi.setns(fd, ffi.CLONE_NEWTIME)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ClockError(
            f"clock_offset={offset:g}: this host gives no time namespace with that offset "
            f"({exc.strerror or exc}); time namespaces need Linux 5.6 with CONFIG_TIME_NS, the "
            "privileges to make one, and an offset that keeps the clocks at or above 0"
        ) from None


class ClockError(ConditionError):
    """The clock could not be shifted as the spec asks; the message says why."""


def start_noise(count: int) -> None:
    """Start ``count`` busy processes in the sandbox: shell loops that spin on a CPU, in
    the test's cgroups and on its CPUs. They are orphans (their shell exits at once), so
    the test sees no children of its own; they end with the sandbox."""
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", _BUSY_LOOPS, "noise", str(count)], {})
    os.waitpid(pid, 0)


def seed(item: pytest.Item, value: int) -> None:
    """Seed ``random`` before the test's setup; with pytest-randomly, give it this seed
    too (it reseeds ``random``, and numpy and faker where installed, at every phase)."""
    random.seed(value)
    if item.config.pluginmanager.has_plugin("randomly"):
        item.config.option.randomly_seed = value
