"""pid 1 as a Python process (rootless, or without a snapshot): a fork of the builder
that built the sandbox, then reaps every orphan and forwards signals to the test."""

from __future__ import annotations

import os
import signal
from typing import Final, NoReturn

FORWARDED: Final = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def init_loop() -> NoReturn:
    """pid 1: reap every child (orphans are reparented here), forward signals. Never returns."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is pytest's to handle
    waited = {signal.SIGCHLD, *FORWARDED}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    while True:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            try:
                os.kill(-1, info.si_signo)  # everyone in the namespace but init
            except ProcessLookupError:
                pass


def serve_as_init(w: int, ready: bytes) -> NoReturn:  # pragma: no cover - in pid 1
    """pid 1's setup is done: tell the builder (``ready``: "R", with the problems of its own
    build, if it built the snapshot), keep no descriptor, and reap until killed."""
    os.write(w, ready)
    os.close(w)
    os.closerange(3, 1 << 16)
    init_loop()


def die_reporting(w: int, exc: BaseException) -> NoReturn:  # pragma: no cover - in pid 1
    """pid 1's setup failed: tell the builder ("E" and the error), then exit."""
    try:
        os.write(w, b"E" + f"{type(exc).__name__}: {exc}".encode() + b"\n")
    finally:
        os._exit(1)
