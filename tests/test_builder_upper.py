"""builder.upper: the changes an overlay's upper layer records, read back as A/C/D.

A fake scratch tree (written as an overlay would write it: whiteouts, an opaque
directory, copied-up parents) for the rules; a real overlay, written through in a mount
namespace of its own, for the kernel's side.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from conftest import needs_root
from pytest_isolate.builder import upper


def _scratch(tmp_path: Path) -> tuple[Path, Path, Path]:
    scratch, lower = tmp_path / "scratch", tmp_path / "host"
    (scratch / "u0").mkdir(parents=True)
    lower.mkdir()
    return scratch, scratch / "u0", lower


def _changes(scratch: Path, limit: int = upper.LIMIT) -> tuple[list[tuple[str, str]], int]:
    fd = os.open(scratch, os.O_PATH | os.O_DIRECTORY)
    try:
        return upper.changes(fd, limit)
    finally:
        os.close(fd)


@needs_root  # whiteouts are device nodes; the opaque mark is a trusted.* xattr
def test_upper_layer_entries_become_changes(tmp_path: Path) -> None:
    scratch, u0, lower = _scratch(tmp_path)
    for name in ("gone", "etc/x", "opq/a", "opq/b", "keep/y"):
        (lower / name).parent.mkdir(parents=True, exist_ok=True)
        (lower / name).write_text("host")
    os.chmod(lower / "keep", 0o755)
    copy = scratch / "f3"
    copy.write_text("copied")
    upper.write_manifest(str(scratch), [("u0", str(lower))], [("f3", "/etc/hostname")])
    # What the test does, as overlayfs records it:
    os.mknod(u0 / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # deleted
    (u0 / "new" / "sub").mkdir(parents=True)
    (u0 / "new" / "sub" / "f").write_text("mine")  # created, with its directories
    (u0 / "etc").mkdir()
    os.chmod(u0 / "etc", stat.S_IMODE(os.stat(lower / "etc").st_mode))  # a copied-up parent
    (u0 / "etc" / "x").write_text("changed")
    (u0 / "opq").mkdir()
    os.setxattr(u0 / "opq", "trusted.overlay.opaque", b"y")  # rmdir, mkdir: a is gone
    (u0 / "opq" / "b").write_text("again")
    (u0 / "keep").mkdir(mode=0o700)
    os.chmod(u0 / "keep", 0o700)  # chmod of a directory: changed, its contents not
    (u0 / "__pycache__").mkdir()
    (u0 / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"")
    # The copy is as made: unchanged. The bytecode cache is not listed.
    assert _changes(scratch) == (
        [
            ("C", f"{lower}/etc/x"),
            ("D", f"{lower}/gone"),
            ("C", f"{lower}/keep"),
            ("A", f"{lower}/new"),
            ("A", f"{lower}/new/sub"),
            ("A", f"{lower}/new/sub/f"),
            ("D", f"{lower}/opq/a"),
            ("C", f"{lower}/opq/b"),
        ],
        0,
    )
    copy.write_text("written by the test")
    found, _ = _changes(scratch)
    assert ("C", "/etc/hostname") in found


def test_changes_are_cut_at_the_limit(tmp_path: Path) -> None:
    scratch, u0, lower = _scratch(tmp_path)
    upper.write_manifest(str(scratch), [("u0", str(lower))])
    for i in range(30):
        (u0 / f"f{i:02}").write_text("")
    found, more = _changes(scratch, limit=10)
    assert found == [("A", f"{lower}/f{i:02}") for i in range(10)]
    assert more == 20


def test_no_manifest_means_no_changes(tmp_path: Path) -> None:
    scratch, u0, _ = _scratch(tmp_path)
    (u0 / "f").write_text("")
    assert _changes(scratch) == ([], 0)


def test_manifest_records_layers_and_copies(tmp_path: Path) -> None:
    scratch, _, lower = _scratch(tmp_path)
    (scratch / "f1").write_text("x")
    fd = upper.write_manifest(str(scratch), [("u0", str(lower))], [("f1", "/etc/hosts")])
    os.close(fd)
    manifest = json.loads((scratch / upper.MANIFEST).read_text())
    assert manifest["layers"] == [["u0", str(lower)]]
    [[copy, host, size, mtime]] = manifest["copies"]
    assert (copy, host, size) == ("f1", "/etc/hosts", 1)
    assert mtime == os.stat(scratch / "f1").st_mtime_ns


REAL_OVERLAY = """
import os, sys, json
from pytest_isolate import ffi
from pytest_isolate.builder import upper
lower, scratch = sys.argv[1], sys.argv[2]
ffi.unshare(ffi.CLONE_NEWNS)
ffi.mount(None, "/", None, ffi.MS_REC | ffi.MS_PRIVATE)
ffi.mount("pytest-isolate", scratch, "tmpfs", 0, "mode=0700")
os.mkdir(f"{scratch}/u0"); os.mkdir(f"{scratch}/w0"); os.mkdir(f"{scratch}/merged")
ffi.mount("overlay", f"{scratch}/merged", "overlay", 0,
          f"lowerdir={lower},upperdir={scratch}/u0,workdir={scratch}/w0")
fd = upper.write_manifest(scratch, [("u0", lower)])
m = f"{scratch}/merged"
os.remove(f"{m}/old")
with open(f"{m}/dir/kept", "a") as f:
    f.write("more")
os.makedirs(f"{m}/made/deep")
os.rename(f"{m}/moved", f"{m}/made/moved")
import shutil; shutil.rmtree(f"{m}/tree"); os.mkdir(f"{m}/tree")
ffi.umount2(m, ffi.MNT_DETACH)  # gone from the namespace; the descriptor still reads it
print(json.dumps(upper.changes(fd)))
"""


@needs_root
def test_a_real_overlay_written_through(tmp_path: Path) -> None:
    lower = tmp_path / "host"
    for name in ("old", "dir/kept", "moved", "tree/a", "tree/b/c"):
        (lower / name).parent.mkdir(parents=True, exist_ok=True)
        (lower / name).write_text("host")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", REAL_OVERLAY, str(lower), str(scratch)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found, more = json.loads(out)
    assert more == 0
    assert [tuple(change) for change in found] == [
        ("C", f"{lower}/dir/kept"),
        ("A", f"{lower}/made"),
        ("A", f"{lower}/made/deep"),
        ("A", f"{lower}/made/moved"),
        ("D", f"{lower}/moved"),
        ("D", f"{lower}/old"),
        ("D", f"{lower}/tree/a"),
        ("D", f"{lower}/tree/b"),
    ]
    assert (lower / "old").read_text() == "host"  # the host is untouched


def test_entries_there_before_the_test_are_left_out_until_touched(tmp_path: Path) -> None:
    """Rootless stand-ins (``unmapped``) are in the upper layer before the test runs."""
    scratch, u0, lower = _scratch(tmp_path)
    (lower / "d").mkdir()
    (lower / "d" / "theirs").write_text("host")
    (u0 / "d").mkdir(mode=0o700)  # a stand-in with another mode than the host's
    (u0 / "d" / "theirs").write_text("host")
    upper.write_manifest(str(scratch), [("u0", str(lower))])
    (u0 / "d" / "new").write_text("the test's")
    assert _changes(scratch) == ([("A", f"{lower}/d/new")], 0)
    (u0 / "d" / "theirs").write_text("written")
    assert _changes(scratch) == ([("A", f"{lower}/d/new"), ("C", f"{lower}/d/theirs")], 0)
