"""Precedence: marker, then command line, then ini, then the built-in default, per key;
the session's settings; what one test gets.

Pure functions only: nothing here touches the kernel. Every error names where the bad
value came from and the accepted form (the parsers are in ``values``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from .model import BUILTIN_DEFAULTS, SPEC_KEYS, IsolationSpec, SpecError
from .values import PARSERS, _bad, check_cpuset, check_quota


def option_name(key: str) -> str:
    """The command-line option of a spec key: ``cpu_period`` -> ``--isolate-cpu-period``."""
    return f"--isolate-{key.replace('_', '-')}"


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
    cpus: frozenset[int] = frozenset()
    """The CPUs pytest may run on: a cpuset may name only these (empty: not checked)."""
    diff: bool = False
    """``--isolate-diff``: list what each isolated test changed in its snapshot."""


def resolve_defaults(
    cli: Mapping[str, object | None],
    ini: Mapping[str, object | None],
    cpus: Iterable[int] = (),
) -> IsolationSpec:
    """Per key: command line (``--isolate-KEY``), else ini (``isolate_KEY``), else built-in.

    ``None`` or an empty string in the mappings means "not given".
    """
    values: dict[str, Any] = {}
    sources = []
    for key in SPEC_KEYS:
        parse = PARSERS[key]
        raw_cli = cli.get(key)
        raw_ini = ini.get(key)
        if raw_cli not in (None, ""):
            sources.append(f"command line option {option_name(key)}")
            values[key] = parse(raw_cli, sources[-1])
        elif raw_ini not in (None, ""):
            sources.append(f"ini option isolate_{key}")
            values[key] = parse(raw_ini, sources[-1])
    spec = replace(BUILTIN_DEFAULTS, **values)
    check_quota(spec.cpu, spec.cpu_period, " and ".join(sources))
    if spec.cpuset is not None:
        where = "ini option isolate_cpuset" if cli.get("cpuset") in (None, "") else ""
        check_cpuset(spec.cpuset, cpus, where or "command line option --isolate-cpuset")
    return spec


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
    given += [option_name(key) for key in SPEC_KEYS if cli.get(key) not in (None, "")]
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
    kwargs: Mapping[str, object],
    defaults: IsolationSpec,
    source: str,
    cpus: Iterable[int] = (),
) -> IsolationSpec:
    """Apply validated marker values over the session defaults (``cpus``: the CPUs a cpuset
    may name; empty: not checked)."""
    values = {key: PARSERS[key](value, source) for key, value in kwargs.items()}
    spec = replace(defaults, **values)
    check_quota(spec.cpu, spec.cpu_period, source)
    if "cpuset" in values:
        check_cpuset(spec.cpuset, cpus, source)
    return spec


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
        kwargs = merge_marker_kwargs(markers, source)
        return spec_from_marker(kwargs, settings.defaults, source, settings.cpus)
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
