"""End to end: rootless sandboxes, and the conditions that take parts of them away.

Two ways in:
- As root, with ``PYTEST_ISOLATE_ROOTLESS_USER`` (an unprivileged user) and
  ``PYTEST_ISOLATE_ROOTLESS_PYTHON`` (a Python with this package installed that the user
  can run), the inner pytest is run as that user, inside the condition of each case
  (``tests/conditions.py``), with a delegated cgroup v1 subtree this test creates.
- As that user (the CI's rootless lane), ``test_rootless_here`` runs the plugin directly
  and asserts that namespaces, the snapshot and the caps are all active.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import HAS_CGROUP_V1, IS_LINUX, IS_ROOT

CONDITIONS = str(Path(__file__).with_name("conditions.py"))
USER = os.environ.get("PYTEST_ISOLATE_ROOTLESS_USER", "")
PYTHON = os.environ.get("PYTEST_ISOLATE_ROOTLESS_PYTHON", "")
CGROUP_ROOT = os.environ.get("PYTEST_ISOLATE_CGROUP_ROOT", "")
CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")

needs_rootless_user = pytest.mark.skipif(
    not (IS_ROOT and HAS_CGROUP_V1 and USER and PYTHON),
    reason="needs root, cgroup v1, PYTEST_ISOLATE_ROOTLESS_USER and "
    "PYTEST_ISOLATE_ROOTLESS_PYTHON (see .ci/run)",
)
needs_non_root = pytest.mark.skipif(
    not IS_LINUX or IS_ROOT or not CGROUP_ROOT,
    reason="runs as an unprivileged user with a delegated cgroup named by "
    "PYTEST_ISOLATE_CGROUP_ROOT (the CI's rootless lane)",
)

PROBE_TEST = """
import os, socket, pytest

@pytest.mark.isolated(mem="64M")
def test_isolated():
    print("pid", os.getpid(), "uid", os.getuid())
    print("procs", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
    with open("/sys/class/net/lo/flags") as f:
        up = int(f.read(), 16) & 1
    print("lo", "up" if up else "down", "hostname", socket.gethostname())
    home = os.environ["HOME"]
    with open(os.path.join(home, "pytest-isolate-rootless-probe"), "w") as f:
        f.write("x")
    with open("/tmp/pytest-isolate-rootless-probe", "w") as f:
        f.write("x")
    print("wrote home and tmp")

@pytest.mark.isolated
def test_cannot_undo_the_snapshot():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    MNT_DETACH, CLONE_NEWNS = 2, 0x00020000
    targets = [b"/tmp", os.environ["HOME"].encode(), b"/"]
    assert [libc.umount2(t, MNT_DETACH) for t in targets] == [-1] * len(targets)
    if libc.unshare(CLONE_NEWNS) == 0:  # a mount namespace of our own: its copies are locked
        assert [libc.umount2(t, MNT_DETACH) for t in targets] == [-1] * len(targets)
    with open("/tmp/pytest-isolate-rootless-probe", "w") as f:
        f.write("x")  # still into the snapshot
    print("snapshot held")

@pytest.mark.isolated(mem="64M")
def test_oom():
    hog = []
    for _ in range(32):  # 256 MiB at most: where nothing caps it, the test just fails
        hog.append(bytearray(8 << 20))
    pytest.fail("not capped")
"""


@dataclass
class Workspace:
    path: Path
    cgroup_root: str


def _remove_empty_tree(top: str) -> None:
    for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


@pytest.fixture
def workspace() -> Iterator[Workspace]:
    """A directory and a delegated cgroup v1 subtree (under pytest-isolate/) for USER."""
    user = pwd.getpwnam(USER)
    path = Path(tempfile.mkdtemp(prefix="pytest-isolate-rootless-"))
    os.chown(path, user.pw_uid, user.pw_gid)
    name = f"rootless-test-{os.getpid()}"
    dirs = []
    for controller in CONTROLLERS:
        d = f"/sys/fs/cgroup/{controller}/pytest-isolate/{name}"
        os.makedirs(d, exist_ok=True)
        for entry in [d, *(os.path.join(d, f) for f in ("cgroup.procs", "tasks"))]:
            os.chown(entry, user.pw_uid, user.pw_gid)
        dirs.append(d)
    host_probe = Path("/tmp/pytest-isolate-rootless-probe")
    host_probe.unlink(missing_ok=True)
    try:
        yield Workspace(path, f"/pytest-isolate/{name}")
    finally:
        host_probe.unlink(missing_ok=True)  # written by a fork-only run: no snapshot there
        shutil.rmtree(path, ignore_errors=True)
        for d in dirs:
            _remove_empty_tree(d)  # only what the run left, and only empty groups


def _run(ws: Workspace, condition: str, *args: str) -> subprocess.CompletedProcess[str]:
    (ws.path / "test_probe.py").write_text(PROBE_TEST)
    os.chown(ws.path / "test_probe.py", pwd.getpwnam(USER).pw_uid, -1)
    command = [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-rA",
               "--junitxml=out.xml", *args]  # fmt: skip
    env = {**os.environ, "HOME": str(ws.path), "TMPDIR": str(ws.path)}
    return subprocess.run(
        [sys.executable, CONDITIONS, f"{condition},user={USER}".lstrip(","), "--", *command],
        cwd=ws.path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _header(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("isolation:")]
    return line


def _warnings(out: str) -> list[str]:
    return [line for line in out.splitlines() if "PytestWarning: pytest-isolate: " in line]


def _missing(ws: Workspace, test: str) -> str | None:
    for case in ET.parse(ws.path / "out.xml").getroot().iter("testcase"):
        if case.get("name") == test:
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            return props.get("isolate_missing")
    raise AssertionError(test)


def _strict_fails_first(ws: Workspace, condition: str, part: str) -> None:
    result = _run(ws, condition, "--isolate-strict", f"--isolate-cgroup-root={ws.cgroup_root}")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "ERROR: command line option --isolate-strict: this host cannot give full isolation" in (
        result.stderr
    )
    assert f"missing {part} (" in result.stderr or f"; {part} (" in result.stderr
    assert "passed" not in result.stdout and "collected" not in result.stdout


@needs_rootless_user
def test_rootless_everything(workspace: Workspace) -> None:
    result = _run(workspace, "", f"--isolate-cgroup-root={workspace.cgroup_root}")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr  # test_oom fails: it is OOM-killed
    assert _header(out) == (
        "isolation: rootless, pid net mnt uts ipc user namespaces, overlay snapshot per "
        "top-level directory, cgroup v1 (cpu cpuacct memory pids)"
    )
    assert "PASSED test_probe.py::test_isolated" in out
    assert "PASSED test_probe.py::test_cannot_undo_the_snapshot" in out, out
    assert f"pid 2 uid {pwd.getpwnam(USER).pw_uid}" in out
    assert "procs [1, 2]" in out  # a fresh /proc of the sandbox's own pid namespace
    assert "lo up hostname isolated" in out, out
    assert "wrote home and tmp" in out
    assert "out of memory: the cgroup memory limit is 64.0 MiB" in out
    assert not (workspace.path / "pytest-isolate-rootless-probe").exists()  # the snapshot
    assert not Path("/tmp/pytest-isolate-rootless-probe").exists()
    assert _missing(workspace, "test_isolated") is None
    assert not [w for w in _warnings(out) if "isolated tests run" in w]


@needs_rootless_user
def test_rootless_without_a_delegated_cgroup(workspace: Workspace) -> None:
    result = _run(workspace, "")
    out = result.stdout
    assert _header(out).endswith("overlay snapshot per top-level directory, no cgroup caps")
    (warning,) = [w for w in _warnings(out) if "isolated tests run" in w]
    assert "isolated tests run without cgroup caps (no writable cgroup hierarchy" in warning
    assert "delegate a cgroup to this user and name it with --isolate-cgroup-root" in warning
    assert _missing(workspace, "test_isolated") == "cgroup caps"
    assert "PASSED test_probe.py::test_isolated" in out
    assert not (workspace.path / "pytest-isolate-rootless-probe").exists()
    result = _run(workspace, "", "--isolate-strict")
    assert result.returncode == 4 and "missing cgroup caps (" in result.stderr


@needs_rootless_user
def test_rootless_with_user_namespaces_disabled_is_fork_only(workspace: Workspace) -> None:
    result = _run(workspace, "no-userns", f"--isolate-cgroup-root={workspace.cgroup_root}")
    out = result.stdout
    assert _header(out).startswith("isolation: fork only")
    (warning,) = [w for w in _warnings(out) if "isolated tests run" in w]
    assert "user namespaces are disabled (user.max_user_namespaces=0)" in warning
    assert "fix: sudo sysctl -w user.max_user_namespaces=15000" in warning
    assert _missing(workspace, "test_isolated") == (
        "user namespace, pid/net/mnt/uts/ipc namespaces, overlay snapshot, cgroup caps"
    )
    assert "pid 2 " not in out  # a forked child in the host's pid namespace
    assert Path("/tmp/pytest-isolate-rootless-probe").exists()  # no snapshot: as warned
    _strict_fails_first(workspace, "no-userns", "user namespace")


@needs_rootless_user
def test_rootless_masked_proc_shows_the_hosts(workspace: Workspace) -> None:
    result = _run(workspace, "masked-proc", f"--isolate-cgroup-root={workspace.cgroup_root}")
    out = result.stdout
    assert ", host /proc, cgroup v1 (cpu cpuacct memory pids)" in _header(out)
    (warning,) = [w for w in _warnings(out) if "isolated tests run" in w]
    assert "without fresh /proc (" in warning
    assert _missing(workspace, "test_isolated") == "fresh /proc"
    assert "PASSED test_probe.py::test_isolated" in out
    assert "procs [1, 2]" not in out  # the host's processes are visible
    _strict_fails_first(workspace, "masked-proc", "fresh /proc")


@needs_non_root
def test_rootless_here(pytester: pytest.Pytester) -> None:
    """In the rootless lane: everything is active for this unprivileged user."""
    pytester.makepyfile(PROBE_TEST)
    args = ["-p", "no:cacheprovider", "-s", "-rA", f"--isolate-cgroup-root={CGROUP_ROOT}"]
    result = pytester.runpytest_subprocess(*args)
    out = result.stdout.str()
    assert _header(out) == (
        "isolation: rootless, pid net mnt uts ipc user namespaces, overlay snapshot per "
        "top-level directory, cgroup v1 (cpu cpuacct memory pids)"
    ), "the rootless lane must give namespaces, the snapshot and the caps"
    result.assert_outcomes(passed=2, failed=1)  # test_oom fails: it is OOM-killed
    assert "snapshot held" in out  # the test cannot unmount the snapshot's overlays
    assert f"pid 2 uid {os.getuid()}" in out
    assert "procs [1, 2]" in out
    assert "lo up hostname isolated" in out, out
    assert "out of memory: the cgroup memory limit is 64.0 MiB" in out
    assert not (Path(os.environ["HOME"]) / "pytest-isolate-rootless-probe").exists()
    assert not Path("/tmp/pytest-isolate-rootless-probe").exists()


DIFF_TEST = """
import os, pathlib, pytest

@pytest.mark.isolated
def test_writes():
    home = pathlib.Path(os.environ["HOME"])
    (home / "made").mkdir()
    (home / "made" / "f").write_text("x")
    (home / "kept").write_text("changed")
    (home / "gone").unlink()
    pathlib.Path("/tmp/pytest-isolate-rootless-diff-{pid}").write_text("x")
    pathlib.Path("/var/tmp/pytest-isolate-rootless-diff-{pid}").write_text("x")  # a stand-in's
"""


@needs_non_root
def test_rootless_diff(pytester: pytest.Pytester) -> None:
    """In the rootless lane: --isolate-diff reads the overlays pid 1 built, as the user."""
    home = Path(os.environ["HOME"])
    (home / "kept").write_text("host")
    (home / "gone").write_text("host")
    pytester.makepyfile(test_diff=DIFF_TEST.format(pid=os.getpid()))
    args = ["-p", "no:cacheprovider", "--isolate-diff", f"--isolate-cgroup-root={CGROUP_ROOT}"]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    summary = result.stdout.str().split("isolate diff: what tests changed")[1]
    listed = [line[2:] for line in summary.splitlines() if line.startswith("  ")]
    # Exactly the test's writes: not the stand-ins put in the upper layers beforehand.
    assert sorted(listed) == sorted([
        f"D {home}/gone", f"C {home}/kept", f"A {home}/made", f"A {home}/made/f",
        f"A /tmp/pytest-isolate-rootless-diff-{os.getpid()}",
        f"A /var/tmp/pytest-isolate-rootless-diff-{os.getpid()}",
    ]), summary  # fmt: skip
    assert (home / "gone").exists() and (home / "kept").read_text() == "host"
    assert not (home / "made").exists()
