"""The probe's vocabulary: the parts of a sandbox, and a check's result (pure data)."""

from __future__ import annotations

from dataclasses import dataclass

APPARMOR_SYSCTL = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
MAX_USERNS_SYSCTL = "/proc/sys/user/max_user_namespaces"

# The parts of a sandbox, as the probe, the header and the warning name them.
USERNS = "user namespace"
NAMESPACES = "pid/net/mnt/uts/ipc namespaces"
OVERLAY = "overlay snapshot"
PROC = "fresh /proc"
CGROUPS = "cgroup caps"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


@dataclass(frozen=True)
class Capabilities:
    checks: tuple[Check, ...]

    def get(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)
