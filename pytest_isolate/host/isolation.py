"""What isolation this host gives, decided once per session from the probe's checks.

Pure: ``decide_isolation`` turns the platform, the privilege level and the probe's
``Check``s into a frozen ``Isolation``: how sandboxes are built here (a ``BuildPlan``
for the sandbox builder), which parts are missing, why, and how to fix each. The
header line, the one warning and the ``--isolate-strict`` error are worded here.

Modes:
- ``sandbox``: the sandbox builder builds namespaces (with or without a user namespace),
  the overlay snapshot and cgroups, each part only if the host allows it.
- ``fork``: the test still runs in a forked child and its reports flow as usual, but
  without namespaces (``unshare`` refused, or macOS).
- ``in-process``: no fork at all (Windows and other platforms).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from ..builder.plan import BuildPlan
from .cgroup_choice import parse_cgroup_detail
from .checks import (
    APPARMOR_SYSCTL,
    CGROUPS,
    MAX_USERNS_SYSCTL,
    NAMESPACES,
    OVERLAY,
    PROC,
    USERNS,
    Check,
)

Mode = Literal["sandbox", "fork", "in-process"]

PARTS: Final = (USERNS, NAMESPACES, OVERLAY, PROC, CGROUPS)

PROPERTY: Final = "isolate_missing"
"""The user property naming the parts a test ran without."""

CAPS: Final = frozenset({"cpu", "mem", "pids"})
CONTROLLER_PARTS: Final = {
    "cpu": ("cpu cap", frozenset({"cpu"})),
    "memory": ("memory cap", frozenset({"mem"})),
    "pids": ("pids cap", frozenset({"pids"})),
    "cpuacct": ("cpu accounting", CAPS),
}
"""A missing cgroup controller: the part the tests miss, and the caps that make a test miss
it (a test without them does not)."""
_PART_CAPS: Final = {CGROUPS: CAPS, **dict(CONTROLLER_PARTS.values())}


@dataclass(frozen=True)
class Missing:
    part: str
    why: str
    fix: str


@dataclass(frozen=True)
class Isolation:
    """What this session's isolated tests get. Frozen; kept in ``config.stash``."""

    platform: str
    mode: Mode
    rootless: bool = False
    plan: BuildPlan = field(default_factory=BuildPlan)
    cgroup_version: int | None = None
    controllers: tuple[str, ...] = ()
    missing: tuple[Missing, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.missing

    def missing_for(self, caps: bool | Collection[str]) -> tuple[str, ...]:
        """Names of the missing parts a test asks for. ``caps``: the caps it sets ("cpu",
        "mem", "pids"), or True / False for all / none; the cgroup parts count only for a
        test with one of the caps they serve."""
        wanted = CAPS if caps is True else frozenset() if caps is False else frozenset(caps)

        def asked(part: str) -> bool:
            serves = _PART_CAPS.get(part)
            return serves is None or bool(serves & wanted)

        return tuple(m.part for m in self.missing if asked(m.part))


def _userns_cause(sysctls: Mapping[str, str | None], rootless: bool) -> tuple[str, str]:
    """(why, fix) for a refused user namespace, from the sysctls that explain it."""
    if sysctls.get(APPARMOR_SYSCTL) == "1":
        return (
            "Ubuntu's AppArmor restriction is on (kernel.apparmor_restrict_unprivileged_userns=1)",
            "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor "
            "profile that allows userns for this python, or run pytest as root",
        )
    if sysctls.get(MAX_USERNS_SYSCTL) == "0":
        return (
            "user namespaces are disabled (user.max_user_namespaces=0)",
            "sudo sysctl -w user.max_user_namespaces=15000",
        )
    if rootless:
        return (
            "unshare(CLONE_NEWUSER) is refused (a seccomp filter, as in Docker's default profile?)",
            "run pytest as root, or allow unshare (in Docker: --security-opt seccomp=unconfined)",
        )
    return (
        "unshare(CLONE_NEWUSER) is refused (a seccomp filter?)",
        "allow user namespaces (in Docker: --security-opt seccomp=unconfined)",
    )


def decide_isolation(
    platform: str,
    root: bool,
    checks: Mapping[str, Check],
    sysctls: Mapping[str, str | None] | None = None,
    cgroup_root: str = "",
) -> Isolation:
    """The isolation of this session. ``checks``: the probe's results by name
    (``checks.USERNS`` ...); ``root``: real root (in the initial user namespace)."""
    sysctls = sysctls or {}
    if platform == "darwin":
        why = "Linux namespaces, overlayfs and cgroups do not exist on macOS"
        fix = "run on Linux (a VM or a container) for full isolation"
        return Isolation(
            platform,
            "fork",
            missing=tuple(Missing(p, why, fix) for p in PARTS),
        )
    if platform != "linux":
        why = f"sandboxes need Linux, and {platform} has no fork"
        return Isolation(
            platform,
            "in-process",
            missing=(Missing("process isolation", why, "run on Linux for isolation"),),
        )
    rootless = not root
    missing: list[Missing] = []

    def ok(name: str) -> bool:
        check = checks.get(name)
        return check is not None and check.ok

    def detail(name: str) -> str:
        check = checks.get(name)
        return check.detail if check is not None else "not probed"

    userns_ok = ok(USERNS)
    if not userns_ok:
        why, fix = _userns_cause(sysctls, rootless)
        missing.append(Missing(USERNS, f"{why}: {detail(USERNS)}", fix))
    if not ok(NAMESPACES) or (rootless and not userns_ok):
        # Unprivileged, no namespace can be created without a user namespace first.
        why = detail(NAMESPACES) if userns_ok or not rootless else "needs a user namespace"
        fix = missing[0].fix if missing else "allow unshare (Docker: seccomp=unconfined)"
        missing.append(Missing(NAMESPACES, f"unshare is refused: {why}", fix))
        missing.append(Missing(OVERLAY, "it needs a mount namespace; writes reach the host", fix))
        missing.append(Missing(CGROUPS, "fork-only isolation has no sandbox builder", fix))
        return Isolation(platform, "fork", rootless, BuildPlan(), missing=tuple(missing))
    overlay = ok(OVERLAY)
    if not overlay:
        fix = (
            "Linux 5.11 or later for overlayfs in a user namespace, or run pytest as root"
            if rootless
            else "load overlayfs (modprobe overlay)"
        )
        missing.append(
            Missing(OVERLAY, f"{detail(OVERLAY)}; writes reach the host filesystem", fix)
        )
    fresh_proc = ok(PROC)
    if not fresh_proc:
        missing.append(
            Missing(
                PROC,
                f"{detail(PROC)} (a masked /proc, as in Docker); the host's /proc is shown instead",
                "run without masked /proc paths (Docker: --security-opt systempaths=unconfined)"
                if rootless
                else "run pytest as root outside the container",
            )
        )
    # "cgroup v2: cpu, memory, pids", or with some controllers missing (the check fails, and
    # the caps of the others are still set): "cgroup v2: memory, pids; controllers missing: cpu"
    version, controllers, absent = parse_cgroup_detail(detail(CGROUPS))
    cgroups = version is not None and bool(controllers) and (ok(CGROUPS) or bool(absent))
    check = checks.get(CGROUPS)
    if cgroups:
        for name in absent:
            part, _ = CONTROLLER_PARTS.get(name, (f"{name} controller", CAPS))
            why = f"the cgroup v{version} {name} controller is not available here"
            missing.append(Missing(part, why, check.fix if check is not None else ""))
    else:
        version, controllers = None, ()
        fix = "mount the cgroup v1 cpu, cpuacct, memory and pids controllers read-write"
        if rootless:
            fix = (
                check.fix
                if check is not None and check.fix
                else "delegate a cgroup to this user and name it with --isolate-cgroup-root "
                "(see the README's rootless setup)"
            )
        missing.append(Missing(CGROUPS, detail(CGROUPS), fix))
    plan = BuildPlan(
        userns=("first" if rootless else "last") if userns_ok else "",
        overlay=overlay,
        fresh_proc=fresh_proc,
        cgroups=cgroups,
        cgroup_root=cgroup_root,
    )
    return Isolation(platform, "sandbox", rootless, plan, version, controllers, tuple(missing))


def header_line(iso: Isolation) -> str:
    """``isolation: pid net mnt uts ipc user namespaces, overlay snapshot, cgroup v1 (...)``"""
    if iso.mode == "in-process":
        return f"isolation: none, isolated tests run in-process ({iso.platform})"
    if iso.mode == "fork":
        return (
            "isolation: fork only (each test in a forked child; no namespaces, no overlay "
            "snapshot, no cgroup caps)"
        )
    plan = iso.plan
    names = "pid net mnt uts ipc" + (" user" if plan.userns else "")
    parts = [f"{names} namespaces" + ("" if plan.userns else " (no user namespace)")]
    if plan.overlay:
        parts.append("overlay snapshot" + (" per top-level directory" if iso.rootless else ""))
    else:
        parts.append("no overlay snapshot")
    if not plan.fresh_proc:
        parts.append("host /proc")
    if plan.cgroups and iso.cgroup_version is not None:
        parts.append(f"cgroup v{iso.cgroup_version} ({' '.join(iso.controllers)})")
    else:
        parts.append("no cgroup caps")
    prefix = "isolation: rootless, " if iso.rootless else "isolation: "
    return prefix + ", ".join(parts)


def warning_text(iso: Isolation, parts: tuple[str, ...]) -> str:
    """One line: what is missing, why, and the fix."""
    described = _describe(m for m in iso.missing if m.part in parts)
    return f"pytest-isolate: {_HOW[iso.mode]} {described}"


_HOW: Final = {
    "sandbox": "isolated tests run without",
    "fork": "isolated tests run fork-only, without",
    "in-process": "isolated tests run in-process, without",
}


def _describe(missing: Iterable[Missing]) -> str:
    """``A (why); B (why); fix: X; Y``: each fix named once."""
    chosen = list(missing)
    fixes = list(dict.fromkeys(m.fix for m in chosen))
    return "; ".join(f"{m.part} ({m.why})" for m in chosen) + f"; fix: {'; '.join(fixes)}"


def strict_error(iso: Isolation, source: str) -> str:
    return (
        f"{source}: this host cannot give full isolation, missing {_describe(iso.missing)}. "
        "Fix the host, or drop strict mode to run with what is available."
    )


def assess(cgroup_root: str = "") -> Isolation:
    """Probe this host once (a few throwaway children) and decide. The impure entry point."""
    import sys

    if sys.platform != "linux":
        return decide_isolation(sys.platform, False, {})
    from . import probe
    from .userns import is_real_root

    root = is_real_root()
    checks = probe.session_checks(root, cgroup_root)
    return decide_isolation("linux", root, checks, probe.sysctls(), cgroup_root)
