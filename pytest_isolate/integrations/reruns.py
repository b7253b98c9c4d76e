"""pytest-rerunfailures: each attempt of an isolated test in a fresh sandbox.

pytest-isolate runs the attempts itself (``controller.lifecycle``), with the settings
read here from pytest-rerunfailures; those it does not honour yet are named in a
warning, never ignored silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

# Set by the test process on a report pytest-rerunfailures would not rerun (--only-rerun,
# --rerun-except decide with the exception at hand, which only the test process has).
RERUN_HARD_FAIL = "isolate_rerun_hard_fail"


@dataclass(frozen=True)
class Reruns:
    count: int
    delay: float
    backoff: float = 1.0

    def pause(self, attempt: int) -> float:
        """Seconds to wait before rerun number ``attempt`` (1, 2, ...)."""
        return self.delay * self.backoff ** (attempt - 1)


def reruns_for(item: pytest.Item) -> Reruns | None:
    """pytest-rerunfailures' rerun settings for this test, if it is installed and asks."""
    plugin = item.config.pluginmanager.getplugin("rerunfailures")
    if plugin is None:
        return None
    excluded = getattr(plugin, "_is_rerun_path_excluded", None)
    if excluded is not None and excluded(item):
        return None
    count = plugin.get_reruns_count(item)
    if not count:
        return None
    marker = item.get_closest_marker("flaky")
    condition = marker.kwargs.get("condition") if marker is not None else None
    check = getattr(plugin, "get_reruns_condition", None)
    if condition is not None and not callable(condition) and check is not None:
        if not check(item):  # a static condition (a bool or a string): decided up front
            return None
    delay = plugin.get_reruns_delay(item) if hasattr(plugin, "get_reruns_delay") else 0
    factor = getattr(plugin, "get_reruns_delay_backoff_factor", None)
    backoff = factor(item) if factor is not None else 1.0
    return Reruns(int(count), float(delay or 0), float(backoff))


def rerun_gaps(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """pytest-rerunfailures settings that isolated tests do not honour yet: said once, in
    a warning, never ignored silently."""
    if config.pluginmanager.getplugin("rerunfailures") is None or not items:
        return []
    gaps = []
    if config.getoption("max_suite_reruns", None) is not None:
        gaps.append("--max-suite-reruns")
    if config.getoption("fail_on_flaky", False):
        gaps.append("--fail-on-flaky")
    for item in items:
        marker = item.get_closest_marker("flaky")
        if marker is not None and callable(marker.kwargs.get("condition")):
            gaps.append(f"the callable condition of @pytest.mark.flaky on {item.nodeid}")
    return gaps


def wants_rerun(reports: list[pytest.TestReport]) -> bool:
    """A failure that pytest-rerunfailures would rerun."""
    failed = [r for r in reports if r.failed]
    if not failed or any(hasattr(r, "wasxfail") for r in reports):
        return False
    return not any(getattr(r, RERUN_HARD_FAIL, False) for r in reports)
