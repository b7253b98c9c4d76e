"""Marker, command line and ini values -> one frozen, validated ``IsolationSpec``.

Pure functions only: nothing here touches the kernel. Precedence per key is
marker, then command line, then ini, then the built-in default. Every error
names where the bad value came from and the accepted form.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from typing import Any, Final

__all__ = [
    "BUILTIN_DEFAULTS",
    "IsolationSpec",
    "SpecError",
    "Settings",
    "decide",
    "merge_marker_kwargs",
    "parse_cgroup_root",
    "parse_cpu",
    "parse_hostname",
    "parse_mem",
    "parse_net",
    "parse_pids",
    "parse_shares",
    "parse_timeout",
    "resolve_cgroup_root",
    "resolve_defaults",
    "resolve_strict",
    "spec_from_marker",
]


class SpecError(ValueError):
    """A bad isolation value; ``str()`` is a complete sentence naming its source."""


@dataclass(frozen=True)
class IsolationSpec:
    """What one test asked for. ``None`` means "no cap"."""

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


BUILTIN_DEFAULTS: Final = IsolationSpec()
SPEC_KEYS: Final = tuple(f.name for f in fields(IsolationSpec))

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
# A cap this small cannot even hold the forked Python interpreter's page tables.
MIN_MEM: Final = 4 * 2**20
# What a cgroup's memory limit can hold (a signed 64-bit byte count).
MAX_MEM: Final = 2**63 - 1
# The kernel's PID_MAX_LIMIT: no machine runs more tasks than this.
MAX_PIDS: Final = 2**22

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
    return _positive(value, source, "timeout", TIMEOUT_FORM)


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


_PARSERS: Final[Mapping[str, Any]] = {
    "cpu": parse_cpu,
    "mem": parse_mem,
    "pids": parse_pids,
    "timeout": parse_timeout,
    "hostname": parse_hostname,
    "net": parse_net,
}


@dataclass(frozen=True)
class Settings:
    """Session-wide isolation settings, resolved once in ``pytest_configure``."""

    isolate_all: bool
    disabled: bool
    defaults: IsolationSpec
    strict: bool = False
    """``--isolate-strict``: a host that cannot give every part is an error."""
    strict_source: str = ""
    """Where strict mode was turned on, for the error message."""
    cgroup_root: str = ""
    """``--isolate-cgroup-root``: the cgroup path to create the sandboxes' groups under."""
    shares: tuple[str, ...] = ()
    """Host paths the user shares read-write into every sandbox (``--isolate-share``)."""


def resolve_defaults(
    cli: Mapping[str, object | None], ini: Mapping[str, object | None]
) -> IsolationSpec:
    """Per key: command line (``--isolate-KEY``), else ini (``isolate_KEY``), else built-in.

    ``None`` or an empty string in the mappings means "not given".
    """
    values: dict[str, Any] = {}
    for key in SPEC_KEYS:
        parse = _PARSERS[key]
        raw_cli = cli.get(key)
        raw_ini = ini.get(key)
        if raw_cli not in (None, ""):
            values[key] = parse(raw_cli, f"command line option --isolate-{key}")
        elif raw_ini not in (None, ""):
            values[key] = parse(raw_ini, f"ini option isolate_{key}")
    return replace(BUILTIN_DEFAULTS, **values)


def check_contradictions(
    isolate_all: bool | None, no_isolate: bool, cli: Mapping[str, object | None]
) -> None:
    """Command-line options that cannot all be honoured are an error, never a guess.

    ``--no-isolate`` overrides the ini file (``isolate_all``, ``isolate_KEY``): that is
    how one debugs a suite configured for isolation. It only contradicts options given
    beside it on the same command line.
    """
    if not no_isolate:
        return
    given = ["--isolate-all"] if isolate_all else []
    given += [f"--isolate-{key}" for key in SPEC_KEYS if cli.get(key) not in (None, "")]
    if given:
        raise SpecError(
            f"command line options {', '.join(given)} and --no-isolate contradict each "
            f"other: --no-isolate runs every test in-process, without sandbox or caps; "
            f"pass one or the other"
        )


def merge_marker_kwargs(
    markers: Iterable[tuple[tuple[object, ...], Mapping[str, object]]], source: str
) -> dict[str, object]:
    """Merge ``(args, kwargs)`` of the isolated markers, closest first (closest wins)."""
    merged: dict[str, object] = {}
    for args, kwargs in markers:
        if args:
            raise SpecError(
                f"{source}: positional arguments are not accepted "
                f"(got {', '.join(map(repr, args))}); use keyword arguments, "
                f"e.g. @pytest.mark.isolated(cpu=0.5, mem='128M')"
            )
        unknown = sorted(set(kwargs) - set(SPEC_KEYS))
        if unknown:
            raise SpecError(
                f"{source}: unknown argument{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}; accepted: {', '.join(SPEC_KEYS)}"
            )
        for key, value in kwargs.items():
            merged.setdefault(key, value)
    return merged


def spec_from_marker(
    kwargs: Mapping[str, object], defaults: IsolationSpec, source: str
) -> IsolationSpec:
    """Apply validated marker values over the session defaults."""
    values = {key: _PARSERS[key](value, source) for key, value in kwargs.items()}
    return replace(defaults, **values)


def decide(
    markers: Iterable[tuple[tuple[object, ...], Mapping[str, object]]],
    settings: Settings,
    nodeid: str,
) -> IsolationSpec | str | None:
    """What one test gets: its spec, an error message for its marker, or None (in-process).

    ``markers``: ``(args, kwargs)`` of its ``isolated`` markers, closest first.
    """
    markers = list(markers)
    if settings.disabled or not (markers or settings.isolate_all):
        return None
    source = f"@pytest.mark.isolated on {nodeid}"
    try:
        return spec_from_marker(merge_marker_kwargs(markers, source), settings.defaults, source)
    except SpecError as exc:
        return str(exc)


CGROUP_ROOT_FORM: Final = (
    "a cgroup path as /proc/self/cgroup shows it, starting with '/', e.g. /pytest-isolate/alice"
)


def parse_cgroup_root(value: object, source: str) -> str:
    """A cgroup path under each hierarchy's mount point; "" (not given) stays ""."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise _bad(source, "cgroup_root", value, CGROUP_ROOT_FORM)
    text = value.strip()
    parts = text.split("/")
    if not text.startswith("/") or "\0" in text or ".." in parts:
        raise _bad(source, "cgroup_root", value, CGROUP_ROOT_FORM)
    return "/" + "/".join(p for p in parts if p and p != ".") if text != "/" else ""


def resolve_strict(cli: bool | None, ini: object) -> tuple[bool, str]:
    """(strict, the source that turned it on): command line first, then ini."""
    if cli:
        return True, "command line option --isolate-strict"
    if parse_bool(ini, "ini option isolate_strict"):
        return True, "ini option isolate_strict"
    return False, ""


def resolve_cgroup_root(cli: object, ini: object) -> str:
    if cli not in (None, ""):
        return parse_cgroup_root(cli, "command line option --isolate-cgroup-root")
    return parse_cgroup_root(ini, "ini option isolate_cgroup_root")


def parse_bool(value: object, source: str) -> bool:
    """Parse an ini boolean (``true/false/1/0/yes/no/on/off``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise SpecError(f"{source}: invalid value {value!r}; expected true or false")
