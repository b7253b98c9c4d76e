"""pytest's terminal as an isolated test found it: its settings, restored after the test.

The test process has no controlling terminal (``testprocess.enter``: a session of its
own), so it can neither open /dev/tty nor push keystrokes into it (TIOCSTI). It may still
hold the terminal itself: ``-s`` gives it pytest's standard streams, and pytest's output
capture keeps copies of them. Through those it can change the terminal's settings (turn
``echo`` off, raw mode); pytest's process puts them back when the test ends.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    import termios
except ImportError:  # pragma: no cover - not on this platform: nothing to keep
    termios = None  # type: ignore[assignment]

Settings = list[Any]
"""``termios.tcgetattr``'s list."""


def _open() -> int:
    """pytest's controlling terminal, opened for a moment; -1 if it has none."""
    if termios is None:
        return -1
    try:  # not inherited: it is closed before the test process is forked
        return os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:  # ENXIO: no controlling terminal (CI, cron, an IDE, pytester)
        return -1


def settings() -> Settings | None:
    """The terminal's settings now; None without a terminal."""
    fd = _open()
    if fd < 0:
        return None
    try:
        return termios.tcgetattr(fd)
    except termios.error:
        return None
    finally:
        os.close(fd)


def restore(saved: Settings | None) -> bool:
    """Put the terminal's settings back to ``saved`` if they changed; True if they had."""
    if saved is None:
        return False
    fd = _open()
    if fd < 0:
        return False
    try:
        if termios.tcgetattr(fd) == saved:
            return False
        # From a background process group, changing the terminal would stop pytest with
        # SIGTTOU; with the signal blocked the kernel lets the change through.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
        try:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return True
    except termios.error:
        return False
    finally:
        os.close(fd)


@contextmanager
def kept() -> Iterator[None]:
    """The terminal's settings after the block are those before it."""
    saved = settings()
    try:
        yield
    finally:
        restore(saved)
