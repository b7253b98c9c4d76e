"""``os.fork`` without Python 3.12's warning about forking a multi-threaded process.

Python 3.12 and later emit a ``DeprecationWarning`` in the parent when a process
with more than one thread forks, because only the forking thread exists in the
child and a lock another thread held stays locked there. pytest-isolate forks
on purpose, for every isolated test; a session fixture that started a thread
(a server, a pool) would otherwise repeat that warning for every test, and turn
it into an error under ``filterwarnings = error``, after the test process has
already been started. What the test process may not rely on is documented in
the README instead: threads of pytest's own process do not exist in it.
"""

from __future__ import annotations

import os
import warnings

# The text of CPython's warning (Modules/posixmodule.c, warn_about_fork_with_threads).
FORK_WARNING = r"This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to deadlocks"


def fork_quietly() -> int:
    """``os.fork()``, with the multi-threaded-fork DeprecationWarning suppressed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=FORK_WARNING, category=DeprecationWarning)
        return os.fork()
