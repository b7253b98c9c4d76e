"""``python -m pytest_isolate doctor``: what this host allows, and how to fix what it does not."""

from __future__ import annotations

import sys

from .host.probe import format_report, probe
from .spec import SpecError, parse_cgroup_root

USAGE = "usage: python -m pytest_isolate doctor [--isolate-cgroup-root PATH]\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cgroup_root = ""
    if len(args) == 3 and args[1] == "--isolate-cgroup-root":
        try:
            cgroup_root = parse_cgroup_root(args[2], "--isolate-cgroup-root")
        except SpecError as exc:
            sys.stderr.write(f"{exc}\n")
            return 2
        args = args[:1]
    if args != ["doctor"]:
        sys.stderr.write(USAGE)
        return 2
    caps = probe(cgroup_root)
    sys.stdout.write(format_report(caps) + "\n")
    return 0 if caps.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
