"""What running a test's own part in a child gives back to the lifecycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from ..reporting import Record
from .changes import Changes


@dataclass
class Outcome:
    reports: list[pytest.TestReport]
    warnings: list[dict[str, Any]]
    record: Record | None
    exit: dict[str, Any] | None = None
    prior: list[pytest.TestReport] = field(default_factory=list)
    """Reports of the items run before the test in its process (the hunt's order rounds)."""
    interrupt: str | None = None
    """Where a KeyboardInterrupt raised in the test process ended its protocol: pytest's
    process raises it again once the reports sent before are logged."""
    changes: Changes | None = None
    """With ``--isolate-diff``: what the test changed in its snapshot."""
