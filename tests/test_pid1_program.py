"""Tests for ``pytest_isolate.pid1.program``: the program a sandbox's pid 1 runs."""

from __future__ import annotations

import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import needs_root
from pytest_isolate.pid1 import program as pid1

x86_64_only = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64", reason="the built-in is x86-64"
)


def test_static_elf_has_one_loaded_segment_entered_at_the_code_and_a_stack_without_exec() -> None:
    code = b"\x90" * 10
    image = pid1.static_elf(code, pid1.EM_X86_64)
    ident, etype, machine, _, entry, phoff, _, _, ehsize, phentsize, phnum, *_ = (
        pid1._EHDR.unpack_from(image)
    )
    assert ident[:4] == b"\x7fELF" and ident[4] == 2  # ELF64
    assert (etype, machine, ehsize, phentsize, phnum) == (2, 62, 64, 56, 2)
    load = pid1._PHDR.unpack_from(image, phoff)
    stack = pid1._PHDR.unpack_from(image, phoff + phentsize)
    ptype, flags, offset, vaddr, _, filesz, memsz, _ = load
    assert (ptype, flags, offset) == (pid1.PT_LOAD, pid1.PF_R | pid1.PF_X, 0)
    assert filesz == memsz == len(image)
    assert image[entry - vaddr :] == code  # entered at the first byte of the code
    assert (stack[0], stack[1]) == (pid1.PT_GNU_STACK, pid1.PF_R | pid1.PF_W)


@pytest.mark.parametrize(("at", "target"), [(0x1B, pid1.NAME.encode() + b"\0"), (0x29, b".\0")])
def test_the_code_points_at_its_strings(at: int, target: bytes) -> None:
    code = pid1._X86_64
    assert code[at : at + 3] in (b"\x48\x8d\x35", b"\x48\x8d\x3d")  # lea disp32(%rip)
    (disp,) = struct.unpack_from("<i", code, at + 3)
    assert code[at + 7 + disp :].startswith(target)


@x86_64_only
@needs_root
def test_builtin_names_itself_enters_its_directory_and_exits_at_eof(tmp_path: Path) -> None:
    program = pid1.builtin()
    assert program is not None and program.enters_root
    r, w = os.pipe2(os.O_CLOEXEC)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # it enters the directory it starts in
    try:
        # As the builder spawns it: its memfd is close-on-exec, like every fd but stdin.
        pid = os.posix_spawn(
            program.file, program.argv, {}, file_actions=[(os.POSIX_SPAWN_DUP2, r, 0)]
        )
    finally:
        os.chdir(cwd)
        os.close(r)
        program.close()
    try:
        deadline = time.monotonic() + 10
        while _comm(pid) != pid1.NAME:
            assert time.monotonic() < deadline, _comm(pid)
            time.sleep(0.01)
        assert os.readlink(f"/proc/{pid}/root") == str(tmp_path)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read() == pid1.NAME.encode() + b"\0"  # as ps shows it
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert not [link for link in links if pid1.NAME in link]  # its memfd is not kept
        os.write(w, b"more than one byte")
        time.sleep(0.1)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # input does not end it
    finally:
        os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@x86_64_only
@needs_root
def test_builtin_that_cannot_enter_its_directory_exits_127() -> None:
    with tempfile.TemporaryDirectory(prefix="pytest-isolate-test-") as tmp:
        os.chmod(tmp, 0o755)  # for nobody
        binary = Path(tmp, "init")
        binary.write_bytes(pid1.static_elf(pid1._X86_64, pid1.EM_X86_64))
        binary.chmod(0o755)
        nobody = subprocess.run(
            [str(binary)], stdin=subprocess.DEVNULL, cwd=tmp, user=65534, timeout=30
        )
    assert nobody.returncode == 127  # no CAP_SYS_CHROOT


@x86_64_only
def test_builtin_is_sealed_and_not_used_where_it_does_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if os.geteuid() == 0:
        program = pid1.builtin()
        assert program is not None
        with pytest.raises(PermissionError):
            os.write(program.fd, b"x")  # F_SEAL_WRITE
        program.close()
    # Code that exits 1 at once: the trial run fails, and the fallback is taken.
    monkeypatch.setitem(pid1.CODE, "x86_64", (bytes.fromhex("bf01000000b8e70000000f05"), 62))
    assert pid1.builtin() is None
    assert os.path.basename(pid1.init_program().argv[0]) == "cat"


def test_elsewhere_pid1_is_cat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pid1, "CODE", {})  # no code for this machine
    assert pid1.builtin() is None
    program = pid1.init_program()
    assert os.path.basename(program.argv[0]) == "cat", program
    assert not program.enters_root and program.fd == -1


def test_without_cat_pid1_is_a_python_doing_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    program = pid1.fallback()
    assert program.argv[0] == sys.executable
    proc = subprocess.run(program.argv, input=b"some input", capture_output=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, b"")  # reads to EOF, writes nothing


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


@x86_64_only
@needs_root
def test_builtin_dies_with_its_parent_even_while_its_pipe_stays_open(tmp_path: Path) -> None:
    binary = tmp_path / "init"
    binary.write_bytes(pid1.static_elf(pid1._X86_64, pid1.EM_X86_64))
    binary.chmod(0o755)
    r, w = os.pipe()  # we keep the write end: no EOF comes
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            f"pid = os.posix_spawn({str(binary)!r}, ['init'], {{}}, file_actions="
            f"[(os.POSIX_SPAWN_DUP2, {r}, 0)])\n"
            "print(pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        pass_fds=(r,),
        cwd=tmp_path,
    )
    try:
        assert parent.stdout is not None
        init = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while _comm(init) != pid1.NAME:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        parent.kill()  # SIGKILL: nothing of its own runs
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{init}") and _state(init) != "Z":
            assert time.monotonic() < deadline, "pid 1's program outlived its parent"
            time.sleep(0.01)
    finally:
        os.close(r)
        os.close(w)
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
