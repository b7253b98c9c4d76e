"""What the sandbox builder builds on this host: decided in pytest's process
(``host.isolation``), sent to the builder as JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class BuildPlan:
    """What the sandbox builder builds on this host (sent to it as JSON)."""

    userns: Literal["last", "first", ""] = "last"
    """"last": as root, created after the mounts (privilege drop); "first": rootless,
    created before everything else; "": none."""
    overlay: bool = True
    fresh_proc: bool = True
    cgroups: bool = True
    cgroup_root: str = ""
    """A cgroup path (as /proc/self/cgroup shows it) to create the groups under."""
    diff: bool = False
    """``--isolate-diff``: keep each snapshot's upper layers readable, to list what its
    test changed (``upper``)."""

    @property
    def init_builds(self) -> bool:
        """The sandbox's pid 1 makes its namespaces and mounts (rootless, or with no
        snapshot). Otherwise the builder makes them, and the test process mounts /proc."""
        return self.userns == "first" or not self.overlay

    def to_json(self) -> dict[str, object]:
        return {
            "userns": self.userns,
            "overlay": self.overlay,
            "fresh_proc": self.fresh_proc,
            "cgroups": self.cgroups,
            "cgroup_root": self.cgroup_root,
            "diff": self.diff,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> BuildPlan:
        userns = str(data.get("userns", "last"))
        if userns not in ("last", "first", ""):
            raise ValueError(f"bad userns {userns!r}")
        return cls(
            userns=userns,  # type: ignore[arg-type]
            overlay=bool(data.get("overlay", True)),
            fresh_proc=bool(data.get("fresh_proc", True)),
            cgroups=bool(data.get("cgroups", True)),
            cgroup_root=str(data.get("cgroup_root", "")),
            diff=bool(data.get("diff", False)),
        )
