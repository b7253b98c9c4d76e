"""What a test changed in its snapshot, read from the overlays' upper layers (``--isolate-diff``).

Runs in the sandbox builder. Every write a test makes to the snapshot lands in the upper
directory of an overlay (on the sandbox's scratch tmpfs), so the upper layers are
exactly what the test created, changed and deleted outside its shared paths (tmp_path's
base directory, ``--isolate-share``: those are bound read-write over the snapshot and
never reach an upper layer). Docker's ``docker diff`` reads the same, for containers.

When the plan asks for it, the snapshot's builder (as root the builder, rootless pid 1)
writes a manifest into the scratch tmpfs (``write_manifest``): each overlay's upper
directory and its lower path, and the host files copied in (writes to those go to the
copy). The builder keeps the scratch tmpfs open (``O_PATH``), so that it can still read
it once the test's mount namespace is gone, and ``changes`` walks it when the test
is done. Cost: nothing without ``--isolate-diff``; with it, one stat per entry the test
wrote (plus one per copied host file).

An upper layer holds:
- a character device 0:0 (a whiteout) where a lower entry was deleted;
- a directory marked opaque (``trusted.overlay.opaque``, or ``user.overlay.opaque``
  rootless) where a lower directory was deleted and made again: its lower entries are
  gone;
- the directories above each written entry, copied up: not a change themselves unless
  their mode changed;
- every created or changed entry, whole (a change of content or metadata copies it up).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator, Sequence
from typing import Final

from .snapshot import MountStep

MANIFEST: Final = "layers.json"
LIMIT: Final = 1000
"""Changes listed per test at most; the rest are counted (a test that fills a directory
with thousands of files is named, not transcribed)."""
_OPAQUE: Final = ("trusted.overlay.opaque", "user.overlay.opaque")
IGNORED_DIRS: Final = frozenset({"__pycache__"})
"""Bytecode caches the interpreter writes on import: a plain run writes them too, and
they change nothing a test reads."""


def write_manifest(
    scratch: str, layers: Sequence[tuple[str, str]], copies: Sequence[tuple[str, str]] = ()
) -> int:
    """Record the snapshot's layers in its scratch tmpfs and keep the tmpfs open.

    ``layers``: (upper directory relative to ``scratch``, the host path it overlays);
    ``copies``: (private copy relative to ``scratch``, the host file). Returns an
    ``O_PATH`` descriptor of ``scratch`` (close-on-exec), to pass to ``changes``.
    """
    copied = []
    for copy, host in copies:
        st = os.stat(os.path.join(scratch, copy))
        copied.append((copy, host, st.st_size, st.st_mtime_ns))
    # What the builder put in the upper layers before the test (rootless: stand-ins for
    # entries it cannot copy up, ``unmapped``): not the test's, unless it touched them.
    before = {upper: _ctimes(os.path.join(scratch, upper)) for upper, _ in layers}
    with open(os.path.join(scratch, MANIFEST), "w") as f:
        json.dump({"layers": list(layers), "copies": copied, "before": before}, f)
    return os.open(scratch, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def changes(scratch_fd: int, limit: int = LIMIT) -> tuple[list[tuple[str, str]], int]:
    """The test's changes as (``"A"`` created | ``"C"`` changed | ``"D"`` deleted, path),
    sorted by path, at most ``limit`` of them, and how many more there were."""
    root = f"/proc/self/fd/{scratch_fd}"
    try:
        with open(f"{root}/{MANIFEST}") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return [], 0
    found: list[tuple[str, str]] = []
    before = manifest.get("before", {})
    for upper, lower in manifest["layers"]:
        found.extend(_layer(f"{root}/{upper}", lower, before.get(upper, {})))
    for copy, host, size, mtime in manifest["copies"]:
        if _copy_changed(f"{root}/{copy}", size, mtime):
            found.append(("C", host))
    found.sort(key=lambda change: change[1])
    return found[:limit], max(0, len(found) - limit)


def _join(lower: str, relative: str) -> str:
    return lower.rstrip("/") + "/" + relative if relative else lower


def _ctimes(upper: str) -> dict[str, int]:
    """Each entry below ``upper`` (relative path) and its ctime, which any change of it
    moves on; for a directory (whose ctime an entry made in it moves) its mode, negated."""
    found: dict[str, int] = {}
    for top, dirs, files in os.walk(upper):
        for name in dirs:
            path = os.path.join(top, name)
            found[os.path.relpath(path, upper)] = -os.lstat(path).st_mode
        for name in files:
            path = os.path.join(top, name)
            found[os.path.relpath(path, upper)] = os.lstat(path).st_ctime_ns
    return found


def _layer(
    upper: str, lower: str, before: dict[str, int] | None = None
) -> Iterator[tuple[str, str]]:
    """Walk one upper directory: what it says of the host path ``lower``. ``before``:
    entries there before the test, by ctime (left out while unchanged)."""
    before = before or {}
    stack = [""]
    while stack:
        relative = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(upper, relative) if relative else upper))
        except OSError:
            continue  # made unreadable by the test: its entry is listed already
        for entry in entries:
            path = os.path.join(relative, entry.name) if relative else entry.name
            host = _join(lower, path)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and before.get(path) == -st.st_mode:
                stack.append(path)  # as the builder made it
                continue
            if before.get(path) == st.st_ctime_ns:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                yield "D", host
                continue
            if stat.S_ISDIR(st.st_mode):
                if entry.name in IGNORED_DIRS:
                    continue
                yield from _directory(entry.path, host, st)
                stack.append(path)
                continue
            yield ("C" if _lexists(host) else "A"), host


def _directory(upper: str, host: str, st: os.stat_result) -> Iterator[tuple[str, str]]:
    try:
        lower = os.lstat(host)
    except OSError:
        yield "A", host
        return
    if not stat.S_ISDIR(lower.st_mode):
        yield "C", host  # a file or link replaced by a directory
        return
    if _opaque(upper):  # deleted and made again: what was below is gone
        try:
            names = set(os.listdir(host)) - set(os.listdir(upper))
        except OSError:
            names = set()
        for name in sorted(names):
            yield "D", _join(host, name)
    if stat.S_IMODE(lower.st_mode) != stat.S_IMODE(st.st_mode):
        yield "C", host


def _opaque(path: str) -> bool:
    for name in _OPAQUE:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP, errno.EPERM):
                raise
    return False


def _lexists(path: str) -> bool:
    try:
        os.lstat(path)
    except OSError:
        return False
    return True


def _copy_changed(copy: str, size: int, mtime: int) -> bool:
    """Whether a private copy of a host file was written since it was made."""
    try:
        st = os.stat(copy)
    except OSError:
        return True
    return st.st_size != size or st.st_mtime_ns != mtime


def keep_rooted(scratch: str, steps: Sequence[MountStep]) -> int:
    """``write_manifest`` for a snapshot ``snapshot.build_tree`` built from ``steps``."""
    layers, copies = [], []
    for index, step in enumerate(steps):
        if step.kind == "overlay" and os.path.isdir(f"{scratch}/u{index}"):
            layers.append((f"u{index}", step.path))
        elif step.kind == "copy-file" and os.path.isfile(f"{scratch}/f{index}"):
            copies.append((f"f{index}", step.path))
    return write_manifest(scratch, layers, copies)
