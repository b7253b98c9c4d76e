"""The C declarations behind ``ffi``, and the generator of ``_abi.py``.

``_abi.py`` is cffi's "out-of-line ABI mode" output: plain Python holding the
parsed declarations, so that importing the bindings needs only ``_cffi_backend``
and not the C parser (about 7 MiB less in every process that forks per test).
Nothing is compiled. Regenerate after changing ``CDEF``::

    python -m pytest_isolate.ffi.build

``tests/test_ffi.py`` fails if the committed file is stale.
"""

from __future__ import annotations

import os
import sys

MODULE = "pytest_isolate.ffi._abi"
CDEF = """
    int unshare(int flags);
    int setns(int fd, int nstype);
    int mount(const char *source, const char *target, const char *fstype,
              unsigned long flags, const void *data);
    int prctl(int option, unsigned long arg2, unsigned long arg3,
              unsigned long arg4, unsigned long arg5);
    int clone(int (*fn)(void *), void *stack, int flags, void *arg, ...);
    int pause(void);
    int sigfillset(void *set);
    int pthread_sigmask(int how, const void *set, void *oldset);
    int umount2(const char *target, int flags);
    long syscall(long number, ...);
"""


def generate(path: str) -> None:
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(MODULE, None)
    ffi.emit_python_code(path)


def main() -> None:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_abi.py")
    generate(path)
    sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
