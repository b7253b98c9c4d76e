"""A cgroup v2 base delegated to an ordinary user (``systemd-run --user --scope -p
Delegate=yes``, or one named with ``--isolate-cgroup-root``): what pytest changes in it
to use it, and undoes at the end.

A delegated base is ours to use: we enable there what its parent passes on (its
``cgroup.controllers``). It may do so only while it holds no process, so pytest, when it
sits in the base itself (the systemd-run scope), first moves into a leaf of its own,
``<base>/pytest-isolate-<PID>.<STARTTIME>``; ``leave_delegated`` undoes both at the end
(``DelegatedBase``).
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from typing import Final

from . import PREFIX, CgroupError
from ._files import _makedirs, _read, _rmdir_quietly, _write
from .owners import owner_token

LEAF_PREFIX: Final = f"{PREFIX}-"
"""pytest's own leaf in a delegated base: ``pytest-isolate-<PID>.<STARTTIME>``."""
_LEAF_NAME = re.compile(re.escape(LEAF_PREFIX) + r"[0-9]+\.[0-9]+")


def own_cgroup(proc: str = "/proc", pid: int | None = None) -> str | None:
    """The cgroup v2 path of a process (its ``0::`` line in ``/proc/PID/cgroup``; this
    process's by default), or None."""
    try:
        text = _read(f"{proc}/{'self' if pid is None else pid}/cgroup")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def is_leaf_name(name: str) -> bool:
    """Whether ``name`` is a leaf pytest moved into (``pytest-isolate-<PID>.<STARTTIME>``)."""
    return _LEAF_NAME.fullmatch(name) is not None


@dataclass
class DelegatedBase:
    """What this process changed in one delegated base, to undo at the end.

    Only the process that made the changes undoes them (``pid``): a child forked from
    pytest inherits this record but is no owner of it.
    """

    path: str
    pid: int = field(default_factory=os.getpid)
    leaf: str = ""
    """The leaf this process moved into, or "" when it did not have to move."""
    enabled: set[str] = field(default_factory=set)
    """Controllers this process enabled in the base's ``cgroup.subtree_control``."""

    def enable(self, wanted: frozenset[str], sits_here: bool, proc: str) -> None:
        """Enable ``wanted`` for the base's children; first move this process out of the
        base into a leaf of its own if it sits in the base (``sits_here``)."""
        control = os.path.join(self.path, "cgroup.subtree_control")
        text = " ".join(f"+{c}" for c in sorted(wanted))
        if sits_here and not self.leaf:
            self._enter_leaf(proc)
        try:
            _write(control, text)
        except CgroupError as exc:
            others = sorted(_procs(self.path))
            if self.leaf and not self.enabled:
                self._leave_leaf()  # as we found it
            if exc.errno != errno.EBUSY:
                raise
            raise CgroupError(
                errno.EBUSY, f"cannot write {text!r} to {control}: the delegated cgroup holds "
                f"processes other than pytest ({', '.join(map(str, others)) or 'none now'}), "
                "and controllers can be enabled only in a cgroup without processes",
            ) from None  # fmt: skip
        self.enabled |= wanted

    def _enter_leaf(self, proc: str) -> None:
        leaf = os.path.join(self.path, LEAF_PREFIX + owner_token(proc=proc))
        try:
            _makedirs(leaf)
        except OSError as exc:
            raise CgroupError(exc.errno, f"cannot create {leaf}: {exc.strerror}") from None
        try:
            _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
        except CgroupError:
            _rmdir_quietly(leaf)
            raise
        self.leaf = leaf

    def _leave_leaf(self) -> bool:
        """Move this process back into the base and remove its leaf; False if it cannot."""
        try:
            _write(os.path.join(self.path, "cgroup.procs"), str(os.getpid()))
        except CgroupError:
            return False
        leaf, self.leaf = self.leaf, ""
        _rmdir_quietly(leaf)  # a process pytest started may live on there: swept later
        return True

    def undo(self) -> None:
        """Disable what we enabled, then move back into the base and remove the leaf.

        The base can take a process again only with nothing enabled in it. While another
        run under the same base still uses the controllers (the kernel says EBUSY), both
        stay: pytest ends in its leaf, and a later run's sweep removes the leaf.
        """
        if self.enabled:
            control = os.path.join(self.path, "cgroup.subtree_control")
            try:
                _write(control, " ".join(f"-{c}" for c in sorted(self.enabled)))
                self.enabled = set()
            except CgroupError:
                return
        if self.leaf:
            self._leave_leaf()


_delegated: dict[str, DelegatedBase] = {}
"""Delegated bases this process changed, by directory."""


def leave_delegated() -> None:
    """Undo what this process changed in delegated bases (``DelegatedBase.undo``); call it
    once every sandbox is gone. A no-op for a process that changed nothing."""
    for path, record in list(_delegated.items()):
        if record.pid == os.getpid():
            del _delegated[path]
            record.undo()


def _procs(path: str) -> set[int]:
    try:
        return {int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()}
    except OSError:
        return set()


def enable_base(base: str, wanted: frozenset[str], own_path: str, proc: str) -> None:
    """Enable ``wanted`` for the children of the delegated ``base``, moving this process
    into a leaf first if it sits in the base (its cgroup is ``own_path``)."""
    record = _delegated.get(base)
    if record is None or record.pid != os.getpid():
        record = DelegatedBase(base)
    record.enable(wanted, own_cgroup(proc) == own_path, proc)
    _delegated[base] = record
