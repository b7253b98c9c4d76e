"""Rootless: host entries the snapshot could not copy up, and their stand-ins.

Rootless, the sandbox's user namespace maps one uid and one gid: ours. Overlayfs refuses
to copy up an entry whose owner or group is not mapped in the user namespace of the
process copying it up (EOVERFLOW, "Value too large for defined data type"). A write
copies up the entry and every directory above it, up to the root of its overlay (which
is never copied up: its upper directory is ours). So a write failed, where the same user
could write on the host, in or below:

- a root-owned directory writable by all (``/var/tmp``, ``/run/lock``: not overlay
  roots), or by one of our supplementary groups (the gid map has only our own group);
- a directory of ours whose group is root's or another group's (and anything below it);
- a file of another owner that we may write, or rename (in a directory we may write
  into, unless its sticky bit says no), or a file of ours with another group.

No mapping reaches those ids without real root (newuidmap maps only /etc/subuid ranges,
an idmapped mount of a host filesystem needs CAP_SYS_ADMIN in the initial namespace).
So the builder finds such entries once per session (``find``, as the user, before it
enters its user namespace) and, for each sandbox, creates stand-ins for them in the upper
directory of the overlay they belong to before mounting it (``pre_create``): each
directory with the host's mode and times (overlayfs merges it with the host's, so
nothing needs copying up), each small file with its content too. Inside, such an entry
is owned by the test's uid (instead of the overflow id 65534) and its owner bits are
what the user may do with it on the host, so a file it could not write stays unwritable.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

SPECIAL: Final = ("proc", "sys", "dev")
SCAN_DEPTH: Final = 3
"""How deep the scan for writable directories of other owners goes: /var/tmp, /run/lock
are at depth 2."""
TREE_BUDGET: Final = 20000
"""Entries looked at in each of our own trees ($HOME, the working directory)."""
SHARED_BUDGET: Final = 5000
"""Entries looked at below each shared writable directory (/var/tmp): directories only."""
FILE_LIMIT: Final = 1 << 20
"""Larger files are not copied into every sandbox; writes to them fail as before."""
FILES_TOTAL: Final = 8 << 20
"""The files copied into every sandbox, together, at most (the first found first)."""
PRUNE: Final = frozenset({".git", "node_modules", ".tox", ".nox", "__pycache__"})


def _foreign(st: os.stat_result, uid: int, gid: int) -> bool:
    return st.st_uid != uid or st.st_gid != gid


def _writable_dir(path: str) -> bool:
    return os.access(path, os.W_OK | os.X_OK, follow_symlinks=False)


def _scan_system(uid: int, gid: int, depth: int) -> list[str]:
    """Directories of other owners or groups that we may write into, breadth first
    (below the top level: a top-level directory is an overlay's root)."""
    found: list[str] = []
    try:
        level = [f"/{name}" for name in sorted(os.listdir("/")) if name not in SPECIAL]
    except OSError:
        return found
    for level_depth in range(1, depth + 1):
        below: list[str] = []
        for path in level:
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            if level_depth > 1 and _foreign(st, uid, gid) and _writable_dir(path):
                found.append(path)
            if level_depth < depth:
                try:
                    with os.scandir(path) as it:
                        below += [e.path for e in it if e.is_dir(follow_symlinks=False)]
                except OSError:
                    pass
        level = below
    return found


def _walk_tree(top: str, uid: int, gid: int, budget: int, files: bool = True,
               skip: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """Entries of another owner or group below ``top`` that we could change: directories
    we may write into; with ``files``, files we may write, own, or rename. Breadth first,
    ``budget`` entries at most; not below ``skip``."""
    found: list[str] = []
    queue = [top]
    seen = 0
    while queue and seen < budget:
        parent = queue.pop(0)
        if parent in skip:
            continue
        try:
            pst = os.lstat(parent)
            it = os.scandir(parent)
        except OSError:
            continue
        parent_writable = _writable_dir(parent)
        sticky = bool(pst.st_mode & stat.S_ISVTX) and pst.st_uid != uid
        with it:
            for entry in it:
                seen += 1
                if not files and not entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if entry.name not in PRUNE:
                        queue.append(entry.path)
                    if _foreign(st, uid, gid) and _writable_dir(entry.path):
                        found.append(entry.path)
                elif stat.S_ISREG(st.st_mode) and _foreign(st, uid, gid):
                    mine = st.st_uid == uid
                    movable = parent_writable and (not sticky or mine)
                    if mine or movable or os.access(entry.path, os.W_OK):
                        found.append(entry.path)
    return found


@dataclass(frozen=True)
class Found:
    entries: tuple[str, ...] = ()
    """Host paths to stand in for, parents before children."""
    skipped: tuple[str, ...] = ()
    """Files too large to copy into every sandbox (``FILE_LIMIT``, ``FILES_TOTAL``)."""

    def problems(self) -> list[str]:
        return [f"{path}: owned by an id the sandbox cannot map, and too large to copy "
                "into each sandbox (writes to it fail)" for path in self.skipped]  # fmt: skip


def find(places: Iterable[str], uid: int | None = None, gid: int | None = None,
         depth: int = SCAN_DEPTH, budget: int = TREE_BUDGET) -> Found:  # fmt: skip
    """Host paths that need a stand-in, parents before children.

    ``places``: directories a test is expected to write below ($HOME, the working
    directory, the temporary directory). Found: writable directories of other owners or
    groups down to ``depth``; in each place we own, the entries of other owners or groups
    that we could change (``budget`` entries each); in each place of another's (/tmp)
    and below each directory found so far, the writable directories of other owners or
    groups (``SHARED_BUDGET`` entries each: a file of another's there is written in
    place, if at all, and fails as before); and every directory of another owner or
    group above any of these or above a place (each would be copied up).
    """
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    real = sorted({os.path.realpath(p) for p in places if p and os.path.isdir(p)})
    shared = _scan_system(uid, gid, depth)
    found = set(shared)
    own = [p for p in real if _owner(p) == uid]  # the others (/tmp): shared
    for top in real:
        if not any(top != other and top.startswith(other + "/") for other in own):
            if top in own:
                found.update(_walk_tree(top, uid, gid, budget))
            else:
                shared.append(top)
    for top in shared:
        found.update(_walk_tree(top, uid, gid, SHARED_BUDGET, files=False, skip=own))
    for path in [*found, *real]:
        parent = os.path.dirname(path)
        while parent.count("/") >= 2:  # a top-level directory is an overlay's root
            try:
                st = os.lstat(parent)
            except OSError:
                break
            if _foreign(st, uid, gid):
                found.add(parent)
            parent = os.path.dirname(parent)
    return _within_budget(sorted(found - set(real)))


def _owner(path: str) -> int:
    try:
        return os.stat(path).st_uid
    except OSError:
        return -1


def _within_budget(entries: list[str]) -> Found:
    """``entries``, the files beyond ``FILE_LIMIT`` or ``FILES_TOTAL`` set apart."""
    kept: list[str] = []
    skipped: list[str] = []
    total = 0
    for entry in entries:
        try:
            st = os.lstat(entry)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            if st.st_size > FILE_LIMIT or total + st.st_size > FILES_TOTAL:
                skipped.append(entry)
                continue
            total += st.st_size
        kept.append(entry)
    return Found(tuple(kept), tuple(skipped))


def _mode(host: str, st: os.stat_result) -> int:
    """The stand-in's mode: the host's, with owner bits saying what we may do there on
    the host (the stand-in is ours) and without setuid/setgid on files."""
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode):
        mode &= ~(stat.S_ISUID | stat.S_ISGID)
    if st.st_uid == os.getuid():
        return mode
    may = sum(bit for flag, bit in ((os.R_OK, 0o400), (os.W_OK, 0o200), (os.X_OK, 0o100))
              if os.access(host, flag, follow_symlinks=False))  # fmt: skip
    return (mode & ~0o700) | may


def _copy_entry(host: str, upper: str) -> tuple[int, int] | None:
    """Create ``upper`` like ``host``; the times to set once its children exist."""
    st = os.lstat(host)
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(upper, 0o700)
    elif stat.S_ISREG(st.st_mode):
        with open(host, "rb") as src:
            fd = os.open(upper, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if st.st_size:
                    os.sendfile(fd, src.fileno(), 0, st.st_size)
            finally:
                os.close(fd)
    else:
        return None
    os.chmod(upper, _mode(host, st))
    return st.st_atime_ns, st.st_mtime_ns


def pre_create(lower: str, upper: str, entries: Sequence[str],
               inner: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """Stand-ins in ``upper`` (the upper directory of the overlay of ``lower``, not yet
    mounted) for the ``entries`` below ``lower``, each with the directories between.
    ``inner``: roots of other overlays mounted over this one (their entries are theirs).
    Also gives ``upper`` the mode and times of ``lower`` (an overlay's root shows its
    upper directory's). Returns a line for each entry it could not stand in for."""
    problems: list[str] = []
    times: list[tuple[str, tuple[int, int]]] = []
    try:
        st = os.stat(lower)
        os.chmod(upper, _mode(lower, st))
        times.append((upper, (st.st_atime_ns, st.st_mtime_ns)))
    except OSError:
        pass
    prefix = lower.rstrip("/") + "/"
    mine = [r for r in inner if r.startswith(prefix)]
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        if any(entry == r or entry.startswith(r + "/") for r in mine):
            continue
        parts = entry[len(prefix) :].split("/")
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            target = f"{upper}/{rel}"
            if os.path.lexists(target):
                continue
            try:
                made = _copy_entry(prefix + rel, target)
            except OSError:
                made = None
            if made is None:
                problems.append(f"{entry}: owned by an id the sandbox cannot map (writes fail)")
                break
            times.append((target, made))
    for path, (atime, mtime) in reversed(times):
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)
    return problems
