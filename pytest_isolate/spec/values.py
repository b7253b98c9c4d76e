"""Parsing and bounds of each isolation value, from a marker, the command line or ini.

Pure functions: each takes the raw value and its source (which test's marker, which
option or ini key) and returns the value or raises a ``SpecError`` that names the
source and the accepted form. Every value is bounded here, so nothing the parser lets
through can overflow later (a poll timeout, a CFS quota, a time namespace offset).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from typing import Any, Final

from .model import SpecError

_NONE_WORDS = frozenset({"none", "max", "unlimited", "off"})

CPU_FORM: Final = "a number of CPUs > 0, e.g. 0.3 (30% of one CPU) or 2, or None for no cap"
MEM_FORM: Final = (
    "bytes as an int, or a string like '128M', '1.5GiB', '500MB' "
    "(K/M/G/T and KiB/MiB/GiB/TiB are binary, KB/MB/GB/TB decimal), or None for no cap"
)
PIDS_FORM: Final = "an int >= 1 (processes and threads), or None for no cap"
TIMEOUT_FORM: Final = "seconds as a number > 0, e.g. 10 or 2.5, or None for no timeout"
HOSTNAME_FORM: Final = (
    "a hostname: 1-64 characters, dot-separated labels of letters, digits and inner '-'"
)
NET_FORM: Final = (
    "'private' (a fresh network namespace with only lo) or 'host' (the host's network, "
    "e.g. to reach a server that a session fixture started on 127.0.0.1)"
)
NET_MODES: Final = ("private", "host")
SHARE_FORM: Final = (
    "an existing directory or file on the host, absolute or relative to the current "
    "directory (command line) or to the rootdir (ini), not / and not under /proc, /sys or /dev"
)
# Mounted fresh in every sandbox: a host path under them cannot be shared.
_FRESH_TREES: Final = ("/proc", "/sys", "/dev")

# The CFS bandwidth controller refuses a quota below 1 ms per 100 ms period.
MIN_CPU: Final = 0.01
# More CPUs than the kernel supports on any machine (NR_CPUS is at most 8192).
MAX_CPU: Final = 8192.0
# A cap this small cannot even hold the forked Python interpreter's page tables.
MIN_MEM: Final = 4 * 2**20
# What a cgroup's memory limit can hold (a signed 64-bit byte count).
MAX_MEM: Final = 2**63 - 1
# The kernel's PID_MAX_LIMIT: no machine runs more tasks than this.
MAX_PIDS: Final = 2**22
# A week: no test runs longer (and a deadline this far off still fits every clock).
MAX_TIMEOUT: Final = 7 * 86400.0

_UNITS: Final[Mapping[str, int]] = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
    "t": 2**40,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}
_MEM_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")
# Dot-separated labels of letters, digits and inner hyphens; 64 characters in all.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?=.{{1,64}}\Z){_LABEL}(?:\.{_LABEL})*", re.DOTALL)


def _is_none(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)


def _bad(source: str, key: str, value: object, form: str, why: str = "") -> SpecError:
    reason = f" ({why})" if why else ""
    return SpecError(f"{source}: invalid {key}={value!r}{reason}; expected {form}")


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _positive(value: object, source: str, key: str, form: str) -> float:
    number = _number(value)
    if number is None or not math.isfinite(number):
        raise _bad(source, key, value, form)
    if number <= 0:
        raise _bad(source, key, value, form, "must be greater than 0")
    return number


def parse_cpu(value: object, source: str) -> float | None:
    if _is_none(value):
        return None
    number = _positive(value, source, "cpu", CPU_FORM)
    if number < MIN_CPU:
        raise _bad(source, "cpu", value, CPU_FORM, f"the kernel's smallest cap is {MIN_CPU}")
    if number > MAX_CPU:
        raise _bad(source, "cpu", value, CPU_FORM, f"must be at most {MAX_CPU:g}; None for no cap")
    return number


def parse_mem(value: object, source: str) -> int | None:
    if _is_none(value):
        return None
    if isinstance(value, bool):
        raise _bad(source, "mem", value, MEM_FORM)
    if isinstance(value, int):
        nbytes = value
    elif isinstance(value, str):
        match = _MEM_RE.fullmatch(value)
        if match is None or match.group(2).lower() not in _UNITS:
            raise _bad(source, "mem", value, MEM_FORM)
        # Exact arithmetic: float("8.2") * 10**6 would give 8199999.
        nbytes = int(Fraction(match.group(1)) * _UNITS[match.group(2).lower()])
    else:
        raise _bad(source, "mem", value, MEM_FORM)
    if nbytes < MIN_MEM:
        raise _bad(source, "mem", value, MEM_FORM, "must be at least 4MiB")
    if nbytes > MAX_MEM:
        raise _bad(source, "mem", value, MEM_FORM, "must be at most 8EiB; None for no cap")
    return nbytes


def parse_pids(value: object, source: str) -> int | None:
    if _is_none(value):
        return None
    if isinstance(value, bool):
        raise _bad(source, "pids", value, PIDS_FORM)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number: object = int(value.strip())
    else:
        number = value
    if not isinstance(number, int):
        raise _bad(source, "pids", value, PIDS_FORM)
    if number < 1:
        raise _bad(source, "pids", value, PIDS_FORM, "must be at least 1")
    if number > MAX_PIDS:
        raise _bad(source, "pids", value, PIDS_FORM, f"must be at most {MAX_PIDS}; None for no cap")
    return number


def parse_timeout(value: object, source: str) -> float | None:
    if _is_none(value):
        return None
    number = _positive(value, source, "timeout", TIMEOUT_FORM)
    if number > MAX_TIMEOUT:
        why = f"must be at most {MAX_TIMEOUT:g} (a week); None for no timeout"
        raise _bad(source, "timeout", value, TIMEOUT_FORM, why)
    return number


def parse_hostname(value: object, source: str) -> str:
    if not isinstance(value, str) or not _HOSTNAME_RE.fullmatch(value):
        raise _bad(source, "hostname", value, HOSTNAME_FORM)
    return value


def parse_net(value: object, source: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in NET_MODES:
        raise _bad(source, "net", value, NET_FORM)
    return value.strip().lower()


def parse_shares(
    values: Iterable[str], source: str, base: str, exists: Callable[[str], bool]
) -> tuple[str, ...]:
    """Host paths shared read-write into every sandbox: absolute, normalized, unique.

    ``base`` resolves relative paths; ``exists`` tells whether a path is on the host.
    """
    shares: list[str] = []
    for raw in values:
        text = raw.strip()
        if not text:
            raise _bad(source, "share", raw, SHARE_FORM, "empty path")
        path = os.path.normpath(os.path.join(base, os.path.expanduser(text)))
        if path == "/" or any(path == t or path.startswith(t + "/") for t in _FRESH_TREES):
            raise _bad(source, "share", raw, SHARE_FORM, f"{path} cannot be shared")
        if not exists(path):
            raise _bad(source, "share", raw, SHARE_FORM, f"{path} does not exist")
        if path not in shares:
            shares.append(path)
    return tuple(shares)


# -- the conditions a flaky-test hunt varies (and a test may ask for) ------------------------
CPU_PERIOD_FORM: Final = (
    "a period from 1ms to 1s, as seconds (0.5) or with a unit ('100ms', '1s'), "
    "or None for the kernel's 100ms"
)
CPUSET_FORM: Final = "CPU numbers: an int, or a list like '0' or '0-1,3', or None for all CPUs"
CLOCK_FORM: Final = (
    "seconds to add to the monotonic clock, signed: a number, or with a unit "
    "('90s', '-1h', '30d'); at most 3650 days either way; 0 for the host's clock"
)
SEED_FORM: Final = "an int from 0 to 4294967295, or None to leave the seeds as they are"
MIN_CPU_PERIOD: Final = 0.001
MAX_CPU_PERIOD: Final = 1.0
MIN_QUOTA: Final = 0.001
"""The kernel's smallest CFS quota, seconds per period."""
MAX_CPU_ID: Final = 8191
MAX_NOISE: Final = 64
NOISE_FORM: Final = f"an int from 0 to {MAX_NOISE}: busy processes started beside the test"
MAX_CLOCK_OFFSET: Final = 3650 * 86400.0
MAX_SEED: Final = 2**32 - 1
_SECONDS: Final[Mapping[str, float]] = {
    "": 1.0, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
}  # fmt: skip
_DURATION_RE = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-zA-Z]*)\s*")
_CPU_RANGE_RE = re.compile(r"(\d+)(?:-(\d+))?")


def _seconds(value: object, source: str, key: str, form: str) -> float:
    """A duration: a number of seconds, or a string with a unit (us, ms, s, m, h, d)."""
    number = _number(value) if not isinstance(value, str) else None
    if number is None and isinstance(value, str):
        match = _DURATION_RE.fullmatch(value)
        if match is not None and match.group(2).lower() in _SECONDS:
            number = float(match.group(1)) * _SECONDS[match.group(2).lower()]
    if number is None or not math.isfinite(number):
        raise _bad(source, key, value, form)
    return number


def parse_cpu_period(value: object, source: str) -> float | None:
    if _is_none(value):
        return None
    period = _seconds(value, source, "cpu_period", CPU_PERIOD_FORM)
    if not MIN_CPU_PERIOD <= period <= MAX_CPU_PERIOD:
        raise _bad(source, "cpu_period", value, CPU_PERIOD_FORM, "must be from 1ms to 1s")
    return period


def parse_cpuset(value: object, source: str) -> tuple[int, ...] | None:
    if _is_none(value):
        return None
    cpus: set[int] = set()
    if isinstance(value, int) and not isinstance(value, bool):
        cpus.add(value)
    elif isinstance(value, str) and value.strip():
        for part in value.replace(" ", "").split(","):
            match = _CPU_RANGE_RE.fullmatch(part)
            if match is None:
                raise _bad(source, "cpuset", value, CPUSET_FORM)
            first, last = int(match.group(1)), int(match.group(2) or match.group(1))
            if last < first:
                raise _bad(source, "cpuset", value, CPUSET_FORM, f"{part} is an empty range")
            if last > MAX_CPU_ID:
                raise _bad(
                    source, "cpuset", value, CPUSET_FORM, f"CPU {last} is above {MAX_CPU_ID}"
                )
            cpus.update(range(first, last + 1))
    else:
        raise _bad(source, "cpuset", value, CPUSET_FORM)
    if any(cpu < 0 or cpu > MAX_CPU_ID for cpu in cpus):
        raise _bad(source, "cpuset", value, CPUSET_FORM, f"CPU numbers are 0 to {MAX_CPU_ID}")
    return tuple(sorted(cpus))


def format_cpuset(cpus: Iterable[int]) -> str:
    """``(0, 1, 3)`` -> ``"0-1,3"``, the form ``parse_cpuset`` reads."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _bounded_int(value: object, source: str, key: str, form: str, top: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(source, key, value, form)
    if not 0 <= value <= top:
        raise _bad(source, key, value, form, f"must be from 0 to {top}")
    return value


def parse_noise(value: object, source: str) -> int:
    if _is_none(value):
        return 0
    return _bounded_int(value, source, "noise", NOISE_FORM, MAX_NOISE)


def parse_clock_offset(value: object, source: str) -> float:
    if _is_none(value):
        return 0.0
    offset = _seconds(value, source, "clock_offset", CLOCK_FORM)
    if abs(offset) > MAX_CLOCK_OFFSET:
        raise _bad(source, "clock_offset", value, CLOCK_FORM, "at most 3650 days either way")
    return offset


def parse_seed(value: object, source: str) -> int | None:
    if _is_none(value):
        return None
    return _bounded_int(value, source, "seed", SEED_FORM, MAX_SEED)


def check_cpuset(cpus: tuple[int, ...] | None, available: Iterable[int], source: str) -> None:
    """A cpuset may name only CPUs pytest may run on (``available``; empty: not checked)."""
    allowed = set(available)
    missing = sorted(set(cpus or ()) - allowed) if allowed else []
    if missing:
        raise SpecError(
            f"{source}: invalid cpuset={format_cpuset(cpus or ())!r} (CPU {format_cpuset(missing)} "
            f"is not one pytest may run on here: {format_cpuset(allowed)}); expected {CPUSET_FORM}"
        )


def check_quota(cpu: float | None, period: float | None, source: str) -> None:
    """A cap with a period: the quota per period must be at least the kernel's 1 ms."""
    if cpu is None or period is None or cpu * period >= MIN_QUOTA - 1e-12:
        return
    raise SpecError(
        f"{source}: cpu={cpu:g} with cpu_period={period:g}s gives {cpu * period * 1000:g}ms "
        f"of CPU per period, below the kernel's smallest quota of 1ms; raise cpu or cpu_period"
    )


PARSERS: Final[Mapping[str, Callable[[object, str], Any]]] = {
    "cpu": parse_cpu,
    "mem": parse_mem,
    "pids": parse_pids,
    "timeout": parse_timeout,
    "hostname": parse_hostname,
    "net": parse_net,
    "cpu_period": parse_cpu_period,
    "cpuset": parse_cpuset,
    "noise": parse_noise,
    "clock_offset": parse_clock_offset,
    "seed": parse_seed,
}
"""The parser of each ``IsolationSpec`` field."""
