"""The program a sandbox's pid 1 runs, as root with a snapshot (``namespaces.spawn_init``).

pid 1 needs no code of its own (see ``builder.namespaces``): it reads its stdin until
EOF and exits. Any program that does so will do, and what it costs is all start-up:
``cat`` spends most of its 0.5 ms in the dynamic loader and in glibc's CPU-feature
probing (CPUID, which a virtual machine traps). So on x86-64 pid 1 is a program of our
own, 98 bytes of machine code in a static ELF without libc, run from a sealed memfd:

    _start: prctl(PR_SET_PDEATHSIG, SIGKILL)       # the builder's death ends it
            prctl(PR_SET_NAME, "isolate-init")     # what ps shows
            if chroot(".") != 0: exit_group(127)   # into the snapshot, its cwd
    loop:   n = read(0, buf, 1)                    # buf: below the stack pointer
            if n > 0 or n == -EINTR: goto loop
            exit_group(0)                          # EOF (or an error): the builder is gone

It enters the snapshot itself (the builder spawns it from its working directory, the
snapshot), since its file is in no snapshot. It also dies with the builder, even while
another process holds its pipe open (the user namespace's helper, when the builder is
killed as it makes one). Elsewhere, or where the host will not run it
(``vm.memfd_noexec``, a seccomp policy), pid 1 is ``cat``, spawned in the snapshot;
without ``cat``, a Python doing the same.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
from dataclasses import dataclass

NAME = "isolate-init"

# The code above, assembled (GNU as, x86-64); offsets in the comments.
_X86_64 = (
    bytes.fromhex(
        "b89d000000"  # 00 mov $157, %eax          prctl
        "bf01000000"  # 05 mov $1, %edi            PR_SET_PDEATHSIG
        "be09000000"  # 0a mov $9, %esi            SIGKILL
        "0f05"  # 0f syscall
        "b89d000000"  # 11 mov $157, %eax          prctl
        "bf0f000000"  # 16 mov $15, %edi           PR_SET_NAME
        "488d3540000000"  # 1b lea name(%rip), %rsi
        "0f05"  # 22 syscall
        "b8a1000000"  # 24 mov $161, %eax          chroot
        "488d3d3f000000"  # 29 lea dot(%rip), %rdi
        "0f05"  # 30 syscall
        "4885c0"  # 32 test %rax, %rax
        "751f"  # 35 jnz fail
        "31c0"  # 37 loop: xor %eax, %eax      read
        "31ff"  # 39 xor %edi, %edi            fd 0
        "488d7424f8"  # 3b lea -8(%rsp), %rsi
        "ba01000000"  # 40 mov $1, %edx
        "0f05"  # 45 syscall
        "4885c0"  # 47 test %rax, %rax
        "7feb"  # 4a jg loop
        "4883f8fc"  # 4c cmp $-4, %rax             -EINTR
        "74e5"  # 50 je loop
        "31ff"  # 52 xor %edi, %edi
        "eb05"  # 54 jmp out
        "bf7f000000"  # 56 fail: mov $127, %edi
        "b8e7000000"  # 5b out: mov $231, %eax     exit_group
        "0f05"  # 60 syscall
    )
    + NAME.encode()
    + b"\0"
    + b".\0"
)  # 62 name, 6f dot

EM_X86_64 = 62
# os.uname().machine -> (code, e_machine)
CODE = {"x86_64": (_X86_64, EM_X86_64)}
_BASE = 0x400000
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
PT_LOAD, PT_GNU_STACK = 1, 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4


def static_elf(code: bytes, machine: int) -> bytes:
    """A static, position-dependent ELF64 executable: ``code`` loaded read+execute and
    entered at its first byte; a non-executable stack."""
    offset = _EHDR.size + 2 * _PHDR.size
    size = offset + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, SysV
    header = _EHDR.pack(
        ident, 2, machine, 1, _BASE + offset, _EHDR.size, 0, 0,
        _EHDR.size, _PHDR.size, 2, 0, 0, 0,
    )  # fmt: skip
    load = _PHDR.pack(PT_LOAD, PF_R | PF_X, 0, _BASE, _BASE, size, size, 0x1000)
    stack = _PHDR.pack(PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 0, 0, 16)
    return header + load + stack + code


@dataclass(frozen=True)
class InitProgram:
    argv: tuple[str, ...]
    path: str = ""
    """The file to run, if not ``argv[0]``."""
    enters_root: bool = False
    """It chroots into its working directory itself (the built-in program): the builder
    spawns it from the snapshot instead of from inside it."""
    fd: int = -1
    """The memfd holding the built-in program, open for as long as it is used."""

    @property
    def file(self) -> str:
        return self.path or self.argv[0]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def builtin() -> InitProgram | None:
    """The built-in program in a sealed memfd, if this machine has one and runs it."""
    code = CODE.get(os.uname().machine) if sys.platform == "linux" else None
    if code is None:
        return None
    try:
        fd = _sealed_memfd(static_elf(*code))
    except OSError:
        return None
    program = InitProgram((NAME,), f"/proc/self/fd/{fd}", enters_root=True, fd=fd)
    if not _runs(program):
        program.close()
        return None
    return program


def _sealed_memfd(data: bytes) -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create(NAME, flags | MFD_EXEC)  # said outright (Linux >= 6.3)
    except OSError:
        fd = os.memfd_create(NAME, flags)
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o500)
        fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd


# <linux/memfd.h>, <linux/fcntl.h>
MFD_EXEC = 0x0010
F_ADD_SEALS = 1033
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1, 2, 4, 8


def _runs(program: InitProgram) -> bool:
    """Run it once, with its stdin at EOF: it must exit 0."""
    stdin = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
    try:
        pid = os.posix_spawn(program.file, program.argv, {}, file_actions=stdin)
    except OSError:
        return False
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by the kernel (SIGCHLD ignored): no verdict
        return False
    return os.waitstatus_to_exitcode(status) == 0


def fallback() -> InitProgram:
    """``cat`` (it reads its stdin until EOF and does nothing else); a Python doing the
    same where there is no ``cat``."""
    for path in ("/usr/bin/cat", "/bin/cat"):
        if os.access(path, os.X_OK):
            return InitProgram((path,))
    return InitProgram((sys.executable, "-I", "-S", "-c", "import os\nwhile os.read(0, 512): pass"))


def init_program() -> InitProgram:
    """pid 1's program here: the built-in one, or ``fallback()``."""
    return builtin() or fallback()
