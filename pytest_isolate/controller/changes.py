"""What an isolated test changed outside its shared paths (``--isolate-diff``), in pytest's
process: a report section, a junit property, and the session's summary.

The sandbox builder reads the changes from the snapshot's upper layers
(``builder.upper``) and sends them with the sandbox's release. They are attached to the
test's reports, so they reach junitxml, xdist's controller and any plugin that reads
reports; the terminal summary reads them back from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import pytest

from ..host.isolation import Isolation

PROPERTY: Final = "isolate_diff"
"""The user property (a junit ``<property>``) holding the changes, one per line."""
SECTION: Final = "isolate diff"
KINDS: Final = {"A": "created", "C": "changed", "D": "deleted"}
SUMMARY_LINES: Final = 20
"""Lines of changes per test in the terminal summary (the report holds them all)."""


@dataclass(frozen=True)
class Changes:
    """What a test created (``A``), changed (``C``) and deleted (``D``), as ``docker diff``."""

    entries: tuple[tuple[str, str], ...] = ()
    more: int = 0
    """Changes left out of ``entries`` (there were too many to list)."""
    error: str = ""
    """Why the changes are not known, if they are not."""

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Changes:
        return cls(
            tuple((str(kind), str(path)) for kind, path in message.get("changes", ())),
            int(message.get("more", 0)),
            str(message.get("error", "")),
        )

    def lines(self) -> list[str]:
        if self.error:
            return [f"? unknown: {self.error}"]
        lines = [f"{kind} {path}" for kind, path in self.entries]
        if self.more:
            lines.append(f"... and {self.more} more")
        return lines

    def text(self) -> str:
        return "\n".join(self.lines())


def attach(reports: list[pytest.TestReport], changes: Changes) -> None:
    """Put the changes into the test's reports: a section of the report pytest shows for
    the test (the first failed one, else the call's) and a user property of each."""
    if not reports:
        return
    text = changes.text()
    for report in reports:
        report.user_properties.append((PROPERTY, text))
    if not text:
        return
    shown = next((r for r in reports if r.failed), None)
    shown = shown or next((r for r in reports if r.when == "call"), reports[-1])
    shown.sections.append((SECTION, text))


def summary(reports: Iterable[Any]) -> list[tuple[str, list[str]]]:
    """(nodeid, change lines) of every test whose reports carry changes, in run order."""
    seen: dict[str, list[str]] = {}
    for report in reports:
        for name, value in getattr(report, "user_properties", ()):
            if name == PROPERTY and value:
                seen[report.nodeid] = str(value).splitlines()
    return list(seen.items())


def write_summary(terminal: Any, entries: list[tuple[str, list[str]]]) -> None:
    """The session's ``isolate diff`` section: per test, its changes (a few lines each)."""
    terminal.write_sep("-", "isolate diff: what tests changed outside tmp_path and shares")
    if not entries:
        terminal.write_line("no isolated test changed a file")
        return
    for nodeid, lines in entries:
        terminal.write_line(nodeid)
        for line in lines[:SUMMARY_LINES]:
            terminal.write_line(f"  {line}")
        if len(lines) > SUMMARY_LINES:
            terminal.write_line(f"  ... {len(lines) - SUMMARY_LINES} more lines in its report")


def unavailable(isolation: Isolation) -> str | None:
    """Why ``--isolate-diff`` can list nothing on this host, if it cannot (said once)."""
    if isolation.mode == "sandbox" and isolation.plan.overlay:
        return None
    why = "no isolation" if isolation.mode == "in-process" else "no overlay snapshot"
    return (
        f"pytest-isolate: --isolate-diff lists nothing on this host ({why}: the tests "
        "write to the host itself); --isolate-strict makes a host without a snapshot an error"
    )
