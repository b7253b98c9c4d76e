"""pytest-xdist: a test process is a fork of an xdist worker.

The worker's ``WorkerInteractor`` plugin forwards hook calls (warnings, reports, log
lines) to xdist's controller over the worker's execnet channel. In a test process those
hooks still fire (pytest's warnings plugin records each warning there), and the fork
holds the worker's channel: each warning reached the controller twice (from the test
process, and again when pytest's process re-emits it from the report pipe), and a
second process writing on the worker's channel could interleave with it. The test
process's own hook calls go to pytest's process over the report pipe only: it drops
the interactor before it runs anything.
"""

from __future__ import annotations

import pytest


def drop_worker_channel(config: pytest.Config) -> None:
    """In a test process forked from an xdist worker: unregister xdist's interactor."""
    if not hasattr(config, "workerinput"):
        return
    manager = config.pluginmanager
    for plugin in manager.get_plugins():
        # Its class is defined in the code xdist sends to the worker (``__channelexec__``).
        if type(plugin).__name__ == "WorkerInteractor" and hasattr(plugin, "sendevent"):
            manager.unregister(plugin)
