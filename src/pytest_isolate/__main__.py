"""``python -m pytest_isolate doctor``: what this host allows, and how to fix what it does not."""

from __future__ import annotations

import sys

from .probe import format_report, probe

USAGE = "usage: python -m pytest_isolate doctor\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["doctor"]:
        sys.stderr.write(USAGE)
        return 2
    caps = probe()
    sys.stdout.write(format_report(caps) + "\n")
    return 0 if caps.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
