"""``/proc/PID/mountinfo``, parsed (see proc(5)): what is mounted where, with which
filesystem and options. Pure; used to plan the snapshot and to find the cgroup
hierarchies."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    root: str
    mount_point: str
    mount_options: frozenset[str]
    fstype: str
    source: str
    super_options: frozenset[str]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse ``/proc/PID/mountinfo`` (see proc(5))."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        left, _, right = line.partition(" - ")
        lfields = left.split()
        rfields = right.split()
        if len(lfields) < 6 or len(rfields) < 2:
            continue
        entries.append(
            MountEntry(
                mount_id=int(lfields[0]),
                parent_id=int(lfields[1]),
                root=_unescape(lfields[3]),
                mount_point=_unescape(lfields[4]),
                mount_options=frozenset(lfields[5].split(",")),
                fstype=rfields[0],
                source=_unescape(rfields[1]),
                super_options=frozenset(rfields[2].split(",")) if len(rfields) > 2 else frozenset(),
            )
        )
    return entries
