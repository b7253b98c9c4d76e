"""Unit tests for ``pytest_isolate.builder.snapshot.plan_mounts`` (pure: no mounting)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_isolate import ffi
from pytest_isolate.builder.snapshot import (
    FRESH,
    PSEUDO_FS,
    MountStep,
    mount_flags,
    plan_mounts,
    revealing_mounts,
    share_steps,
)
from pytest_isolate.mountinfo import MountEntry, parse_mountinfo

RO, NOSUID, NODEV, NOEXEC = ffi.MS_RDONLY, ffi.MS_NOSUID, ffi.MS_NODEV, ffi.MS_NOEXEC
FILE = "/etc/hostname"  # a real file: plan_mounts looks at the host's paths


def _escape(path: str) -> str:
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")


def _mountinfo(rows: list[tuple[str, str, str]]) -> list[MountEntry]:
    """``(mount point, per-mount options, fstype)`` -> entries, via the real parser."""
    lines = [
        f"{20 + i} 1 0:{40 + i} / {_escape(path)} {opts} shared:{i} - {fstype} src{i} rw"
        for i, (path, opts, fstype) in enumerate(rows)
    ]
    return parse_mountinfo("\n".join(lines) + "\n")


def test_mount_flags() -> None:
    (entry,) = _mountinfo([("/x", "ro,nosuid,nodev,noexec,relatime", "ext4")])
    assert mount_flags(entry) == RO | NOSUID | NODEV | NOEXEC
    (entry,) = _mountinfo([("/x", "rw,relatime,noatime", "ext4")])
    assert mount_flags(entry) == 0
    (entry,) = _mountinfo([("/x", "rw,nosuid", "ext4")])
    assert mount_flags(entry) == NOSUID


def test_constants() -> None:
    assert FRESH == ("/proc", "/sys", "/dev")
    assert {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "nsfs", "rpc_pipefs"} <= PSEUDO_FS
    assert not {"ext4", "tmpfs", "overlay", "xfs", "btrfs", "fuse"} & PSEUDO_FS


def test_plan_typical_host(tmp_path: Path) -> None:
    assert os.path.isfile(FILE)
    ro_dir = tmp_path / "ro data"
    ro_dir.mkdir()
    scratch = "/tmp/pytest-isolate-123.456"
    rows = [
        ("/", "rw,relatime", "ext4"),
        ("/proc", "rw,nosuid,nodev,noexec", "proc"),
        ("/proc/sys/fs/binfmt_misc", "rw", "autofs"),
        ("/sys", "ro,nosuid,nodev,noexec", "sysfs"),
        ("/sys/fs/cgroup", "rw,nosuid", "tmpfs"),
        ("/sys/fs/cgroup/cpu", "rw", "cgroup"),
        ("/sys/fs/cgroup/unified", "rw", "cgroup2"),
        ("/dev", "rw,nosuid", "devtmpfs"),
        ("/dev/shm", "rw,nosuid,nodev", "tmpfs"),
        ("/dev/pts", "rw,nosuid,noexec", "devpts"),
        ("/home", "rw,nosuid,nodev,relatime", "ext4"),
        ("/tmp", "rw,nosuid,nodev", "tmpfs"),
        (scratch, "rw", "tmpfs"),
        (scratch + "/root", "rw", "overlay"),
        ("/tmp/pytest-isolate-123.4567", "rw", "tmpfs"),  # same prefix, not under scratch
        ("/run/netns/x", "rw", "nsfs"),
        ("/var/lib/nfs/rpc_pipefs", "rw", "rpc_pipefs"),
        ("/mnt/cg2", "rw", "cgroup2"),
        (str(ro_dir), "ro,noexec,relatime", "ext4"),
        (FILE, "rw,nosuid,nodev,relatime", "ext4"),
    ]
    steps = plan_mounts(_mountinfo(rows), skip=[scratch])
    assert steps == [
        MountStep("overlay", "/", 0),
        MountStep("overlay", "/home", NOSUID | NODEV),
        MountStep("overlay", "/tmp", NOSUID | NODEV),
        MountStep("copy-file", FILE, NOSUID | NODEV),
        MountStep("overlay", "/tmp/pytest-isolate-123.4567", 0),
        MountStep("bind-ro", str(ro_dir), RO | NOEXEC),
    ]


def test_root_first_parents_before_children() -> None:
    rows = [
        ("/srv/a/b/c", "rw", "ext4"),
        ("/srv/a", "rw", "ext4"),
        ("/opt", "rw", "xfs"),
        ("/srv/a/b", "rw", "tmpfs"),
        ("/", "rw,nosuid", "ext4"),
        ("/srv", "rw", "ext4"),
        ("/aaa/zzz", "rw", "ext4"),
    ]
    steps = plan_mounts(_mountinfo(rows))
    assert [s.path for s in steps] == ["/", "/opt", "/srv", "/aaa/zzz", "/srv/a", "/srv/a/b",
                                       "/srv/a/b/c"]  # fmt: skip
    assert steps[0] == MountStep("overlay", "/", NOSUID)
    paths = [s.path for s in steps]
    for i, step in enumerate(steps):
        ancestors = [
            s.path
            for s in steps
            if s.path != step.path and step.path.startswith(s.path.rstrip("/") + "/")
        ]
        assert all(a in paths[:i] for a in ancestors), step


def test_order_does_not_depend_on_input_order() -> None:
    rows = [("/b/c", "rw", "ext4"), ("/a", "rw", "ext4"), ("/", "rw", "ext4"), ("/b", "rw", "ext4")]
    forward = plan_mounts(_mountinfo(rows))
    backward = plan_mounts(_mountinfo(rows[::-1]))
    assert forward == backward
    assert [s.path for s in forward] == ["/", "/a", "/b", "/b/c"]


def test_read_only_root_becomes_writable_overlay() -> None:
    steps = plan_mounts(_mountinfo([("/", "ro,nosuid,nodev", "ext4")]))
    assert steps == [MountStep("overlay", "/", NOSUID | NODEV)]


def test_missing_root_entry_gets_default_overlay() -> None:
    assert plan_mounts([]) == [MountStep("overlay", "/", 0)]
    steps = plan_mounts(_mountinfo([("/home", "rw", "ext4"), ("/proc", "rw", "proc")]))
    assert steps == [MountStep("overlay", "/", 0), MountStep("overlay", "/home", 0)]


def test_shadowed_mount_points_last_wins() -> None:
    rows = [
        ("/", "ro", "ext4"),
        ("/data", "rw,nosuid", "ext4"),
        ("/data", "ro,nodev", "tmpfs"),  # mounted over the first: this one is visible
        ("/", "rw,noexec", "overlay"),
        ("/cache", "ro", "ext4"),
        ("/cache", "rw", "tmpfs"),
        ("/gone", "rw", "ext4"),
        ("/gone", "rw", "proc"),  # hidden under a pseudo filesystem: dropped
    ]
    steps = plan_mounts(_mountinfo(rows))
    assert steps == [
        MountStep("overlay", "/", NOEXEC),
        MountStep("overlay", "/cache", 0),
        MountStep("bind-ro", "/data", RO | NODEV),
    ]


@pytest.mark.parametrize("fstype", sorted(PSEUDO_FS))
def test_pseudo_filesystems_dropped(fstype: str) -> None:
    steps = plan_mounts(_mountinfo([("/", "rw", "ext4"), ("/mnt/x", "rw", fstype)]))
    assert steps == [MountStep("overlay", "/", 0)]


@pytest.mark.parametrize(
    "path",
    ["/proc", "/proc/fs/nfsd", "/sys", "/sys/kernel/security", "/dev", "/dev/shm", "/dev/hugepages",
     "/dev/mqueue"],
)  # fmt: skip
def test_fresh_trees_never_carried_over(path: str) -> None:
    steps = plan_mounts(_mountinfo([("/", "rw", "ext4"), (path, "rw", "tmpfs")]))
    assert steps == [MountStep("overlay", "/", 0)]


def test_fresh_prefix_lookalikes_are_kept() -> None:
    rows = [("/", "rw", "ext4"), ("/devel", "rw", "ext4"), ("/system", "rw", "ext4"),
            ("/procs", "rw", "tmpfs")]  # fmt: skip
    assert [s.path for s in plan_mounts(_mountinfo(rows))] == ["/", "/devel", "/procs", "/system"]


def test_skip_list() -> None:
    rows = [
        ("/", "rw", "ext4"),
        ("/scratch", "rw", "tmpfs"),
        ("/scratch/deep/er", "rw", "ext4"),
        ("/scratchpad", "rw", "tmpfs"),
        ("/other", "rw", "ext4"),
        ("/keep", "rw", "ext4"),
    ]
    steps = plan_mounts(_mountinfo(rows), skip=["/scratch", "/other"])
    assert [s.path for s in steps] == ["/", "/keep", "/scratchpad"]
    # A skip list never removes "/".
    assert plan_mounts(_mountinfo(rows), skip=["/"]) == [MountStep("overlay", "/", 0)]


def test_revealing_mounts_topmost_proc_and_sysfs() -> None:
    rows = [
        ("/", "rw", "ext4"),
        ("/proc", "rw", "proc"),
        ("/proc/sys/fs/binfmt_misc", "rw", "binfmt_misc"),
        ("/sys", "rw", "sysfs"),
        ("/sys/fs/cgroup", "rw", "tmpfs"),
        ("/srv/ro", "ro", "ext4"),
        ("/srv/ro/proc", "rw", "proc"),  # below another mount: detached on its own
        ("/srv/ro/proc/inner", "rw", "proc"),  # below a proc: goes with it
        ("/scratch/root/proc", "rw", "proc"),
    ]
    found = revealing_mounts(_mountinfo(rows), skip=["/scratch"])
    assert found == ["proc", "srv/ro/proc", "sys"]


def test_file_mounts(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    rows = [
        ("/", "rw", "ext4"),
        (FILE, "ro,nosuid", "ext4"),
        (str(plain), "rw", "tmpfs"),
        (str(tmp_path / "missing"), "ro", "ext4"),  # gone from the host: planned as a directory
        (str(tmp_path / "dir"), "rw", "ext4"),
    ]
    (tmp_path / "dir").mkdir()
    steps = {s.path: s for s in plan_mounts(_mountinfo(rows))}
    assert steps[FILE] == MountStep("bind-ro", FILE, RO | NOSUID)  # read-only stays read-only
    assert steps[str(plain)] == MountStep("copy-file", str(plain), 0)
    assert steps[str(tmp_path / "missing")] == MountStep("bind-ro", str(tmp_path / "missing"), RO)
    assert steps[str(tmp_path / "dir")] == MountStep("overlay", str(tmp_path / "dir"), 0)
    assert len(steps) == 5


def test_escaped_mount_point(tmp_path: Path) -> None:
    spaced = tmp_path / "with space\tand tab"
    spaced.mkdir()
    steps = plan_mounts(_mountinfo([("/", "rw", "ext4"), (str(spaced), "ro", "ext4")]))
    assert steps == [MountStep("overlay", "/", 0), MountStep("bind-ro", str(spaced), RO)]


def test_plan_real_host() -> None:
    with open("/proc/self/mountinfo") as f:
        steps = plan_mounts(parse_mountinfo(f.read()))
    assert steps[0].path == "/" and steps[0].kind == "overlay"
    assert not steps[0].flags & RO
    paths = [s.path for s in steps]
    assert len(paths) == len(set(paths))
    assert not any(p == f or p.startswith(f + "/") for p in paths for f in FRESH)
    depths = [0 if p == "/" else p.count("/") for p in paths]
    assert depths == sorted(depths)


def test_share_steps_are_read_write_binds() -> None:
    assert share_steps(["/srv/results", "/tmp/cov"]) == [
        MountStep("bind-rw", "/srv/results", 0),
        MountStep("bind-rw", "/tmp/cov", 0),
    ]
    assert share_steps([]) == []
