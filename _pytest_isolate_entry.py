"""The pytest11 entry point of pytest-isolate-sandbox.

A module of its own, outside the ``pytest_isolate`` package: PyPI's unrelated
``pytest-isolate`` installs a package of that same name, which shadows ours, so the
check that refuses to run beside it must not live inside the package. When there is
no conflict, the plugin's hooks are re-exported from ``pytest_isolate.plugin``.
"""

from __future__ import annotations

from importlib import metadata

import pytest

CONFLICTING = {
    "pytest-isolate": "it installs the same import package (pytest_isolate) and option names",
    "pytest-isolated": "it registers the same 'isolated' marker with different arguments",
}


def find_conflicts() -> list[str]:
    """One sentence per conflicting distribution that is installed."""
    found = []
    for name, why in CONFLICTING.items():
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(
            f"pytest-isolate-sandbox cannot run beside the PyPI package {name} {version}: "
            f"{why}. Uninstall one of them (pip uninstall {name}), then reinstall this one."
        )
    return found


_CONFLICTS = find_conflicts()
if _CONFLICTS:
    raise pytest.UsageError("\n".join(_CONFLICTS))

from pytest_isolate.plugin import *  # noqa: E402, F403 - the hooks, registered from here
