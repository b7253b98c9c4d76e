"""How many warnings a pytest run reported, from its terminal output (pure; stdlib only).

``third_party.py`` compares the count of a plain run with an isolated run's, with and
without ``-n 2``. The isolated run's count includes pytest-isolate's own warnings (what
this host could not give, a host mount it could not snapshot): those are counted apart
and left out of the comparison. The count is pytest's own, from its last line
(``... 8 warnings in 1.2s``); pytest-isolate's are counted from the warnings summary,
where pytest lists each warning's locations above its message: one line per test, or,
from 10 on, one line per file (``tests/test_a.py: 12 warnings``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

OWN_PREFIX = "PytestWarning: pytest-isolate: "
_COUNT = re.compile(r"(\d+) warnings?\b")
_SECTION = re.compile(r"^=+ (.+?) =+$")
_PER_FILE = re.compile(r"^\S.*: (\d+) warnings?$")


def total_warnings(log: str) -> int:
    """The warnings count on pytest's last line (0 when it names none)."""
    for line in reversed(log.splitlines()):
        if line.startswith("=") or re.search(r"\d+ (passed|failed|errors?|skipped)", line):
            match = _COUNT.search(line)
            return int(match.group(1)) if match else 0
    return 0


def _summary_blocks(log: str) -> list[list[str]]:
    """The blocks (locations, then the indented message) of the warnings summaries."""
    blocks: list[list[str]] = []
    inside = False
    for line in log.splitlines():
        section = _SECTION.match(line)
        if section:
            inside = section.group(1).startswith("warnings summary")
            blocks.append([])
        elif inside and not line.startswith("-- Docs:"):
            if line:  # a message's own empty lines are indented ("  ")
                blocks[-1].append(line)
            else:
                blocks.append([])
    return [block for block in blocks if block]


def own_warnings(log: str) -> int:
    """How many of the run's warnings are pytest-isolate's own."""
    return matching_warnings(log, OWN_PREFIX)


def matching_warnings(log: str, fragment: str) -> int:
    """How many of the run's warnings have ``fragment`` in their message's first line."""
    count = 0
    for block in _summary_blocks(log):
        message = next((i for i, line in enumerate(block) if fragment in line), None)
        if message is None:
            continue
        if not block[message].startswith(" "):
            count += 1  # a warning without a location: its message alone
            continue
        for line in block[:message]:
            if line.startswith(" "):
                break  # the message's first line: the locations are above it
            per_file = _PER_FILE.match(line)
            count += int(per_file.group(1)) if per_file else 1
    return count


@dataclass(frozen=True)
class WarningCount:
    total: int
    own: int
    """pytest-isolate's own, included in ``total``."""
    uncounted: int = 0
    """Those the project lists as not compared (``uncounted``), included in ``total``."""

    @property
    def tests(self) -> int:
        """The warnings of the suite itself: what the two runs must agree on."""
        return self.total - self.own - self.uncounted


def count_warnings(log: str, uncounted: Sequence[str] = ()) -> WarningCount:
    """The run's warnings; ``uncounted``: fragments of messages to count apart."""
    apart = sum(matching_warnings(log, fragment) for fragment in uncounted)
    return WarningCount(total_warnings(log), own_warnings(log), apart)
