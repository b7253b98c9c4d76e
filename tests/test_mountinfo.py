"""Unit tests for ``pytest_isolate.mountinfo``: parsing /proc/PID/mountinfo."""

from __future__ import annotations

from pytest_isolate.mountinfo import MountEntry, parse_mountinfo

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 22 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
32 30 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:11 master:3 - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate

40 22 8:2 /data\\040dir /mnt/my\\040disk rw,relatime - ext4 /dev/sdb\\0401 rw
41 22 0:50 / /mnt/back\\134slash\\011tab rw - tmpfs none
this line is not a mount entry
"""  # noqa: E501


def test_parse_mountinfo_entries() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert entries == [
        MountEntry(22, 1, "/", "/", frozenset({"rw", "relatime"}), "ext4", "/dev/sda1",
                   frozenset({"rw", "errors=remount-ro"})),
        MountEntry(30, 22, "/", "/sys/fs/cgroup", frozenset({"ro", "nosuid", "nodev", "noexec"}),
                   "tmpfs", "tmpfs", frozenset({"ro", "mode=755"})),
        MountEntry(31, 30, "/", "/sys/fs/cgroup/cpu,cpuacct",
                   frozenset({"rw", "nosuid", "nodev", "noexec", "relatime"}), "cgroup", "cgroup",
                   frozenset({"rw", "cpu", "cpuacct"})),
        MountEntry(32, 30, "/", "/sys/fs/cgroup/memory", frozenset({"rw", "nosuid"}), "cgroup",
                   "cgroup", frozenset({"rw", "memory"})),
        MountEntry(33, 30, "/", "/sys/fs/cgroup/unified", frozenset({"rw", "nosuid", "nodev"}),
                   "cgroup2", "cgroup2", frozenset({"rw", "nsdelegate"})),
        MountEntry(40, 22, "/data dir", "/mnt/my disk", frozenset({"rw", "relatime"}), "ext4",
                   "/dev/sdb 1", frozenset({"rw"})),
        MountEntry(41, 22, "/", "/mnt/back\\slash\ttab", frozenset({"rw"}), "tmpfs", "none",
                   frozenset()),
    ]  # fmt: skip


def test_parse_mountinfo_empty() -> None:
    assert parse_mountinfo("") == []
    assert parse_mountinfo("\n\n") == []


def test_parse_real_mountinfo_has_root() -> None:
    with open("/proc/self/mountinfo") as f:
        entries = parse_mountinfo(f.read())
    assert any(e.mount_point == "/" for e in entries)
    assert all(e.mount_point.startswith("/") for e in entries)
