"""End to end on a cgroup v2 host: the caps are reported as on v1 (same texts, same
properties), as root and rootless. Run in the guest of ``.ci/v2-guest``; they skip elsewhere.

Rootless: with ``PYTEST_ISOLATE_ROOTLESS_USER`` (an unprivileged user) and
``PYTEST_ISOLATE_ROOTLESS_PYTHON`` (a Python with this package that the user can run), each
test delegates a group to the user as systemd's ``Delegate=yes`` does (the directory, its
cgroup.procs, cgroup.subtree_control and cgroup.threads chowned), runs the inner pytest as
that user from inside it (``tests/conditions.py``), and checks from outside, as root, that
the run left the group as it found it.

Under emulation Python runs ~14x slower: these tests judge behaviour, never time.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import RunPytest, fork_bomb, needs_cgroup_v2
from pytest_isolate.cgroups import PREFIX

pytestmark = needs_cgroup_v2

TIMEOUT = 600  # seconds for one inner pytest run, under emulation


def _owners() -> set[str]:
    """The run directories under ``/sys/fs/cgroup/pytest-isolate`` (one per live run)."""
    try:
        return {e.name for e in os.scandir(f"/sys/fs/cgroup/{PREFIX}") if e.is_dir()}
    except FileNotFoundError:
        return set()


def _properties(xml_path: str) -> dict[str, dict[str, str]]:
    root = ET.parse(xml_path).getroot()
    out = {}
    for case in root.iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        out[case.get("name", "")] = props
    return out


FORK_BOMB = fork_bomb(pids=8)


def test_v2_memory_cap_oom_kill_is_reported(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.isolated(mem="64M")
        def test_hog():
            print("allocating")
            data = bytearray(200 * 2**20)
            for i in range(0, len(data), 4096):
                data[i] = 1
        """
    )
    before = _owners()
    result = run("--junitxml=out.xml", timeout=TIMEOUT)
    assert _owners() <= before  # the run removed its cgroups
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*The isolated test was killed during call: out of memory: the cgroup memory limit "
            "is 64.0 MiB (mem=67108864), peak usage 6?.? MiB*",
            "*Captured stdout call*",
            "allocating",
            "*OOM kill (1x, limit 64.0 MiB): test_v2_memory_cap_oom_kill_is_reported.py::test_hog*",
        ]
    )
    props = _properties(str(pytester.path / "out.xml"))["test_hog"]
    assert props["isolate_oom_kills"] == "1"
    assert 60 * 2**20 <= int(props["isolate_peak_mem_bytes"]) <= 64 * 2**20


def test_v2_cpu_cap_throttles(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.mark.isolated(cpu=0.2)
        def test_busy():
            end = time.process_time() + 0.5
            while time.process_time() < end:
                pass
        """
    )
    result = run("--junitxml=out.xml", timeout=TIMEOUT)
    result.assert_outcomes(passed=1)
    busy = _properties(str(pytester.path / "out.xml"))["test_busy"]
    assert float(busy["isolate_cpu_user_s"]) + float(busy["isolate_cpu_system_s"]) >= 0.45, busy
    assert int(busy["isolate_nr_throttled"]) > 0, busy
    assert float(busy["isolate_throttled_s"]) > 0, busy


def test_v2_pids_cap_reports_the_limit_hit(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile("import os, time, pytest\n" + FORK_BOMB)
    result = run("--junitxml=out.xml", timeout=TIMEOUT)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*fork refused after 7 children*",
            "*pids limit hit: the sandbox may hold 8 processes and threads (pids=8); "
            "* fork(s) were refused with EAGAIN*",
            "*pids limit 8 hit: *test_fork_bomb*",
        ]
    )
    props = _properties(str(pytester.path / "out.xml"))["test_fork_bomb"]
    assert int(props["isolate_pids_limit_hits"]) >= 1
    assert int(props["isolate_peak_pids"]) == 8


# -- rootless: a group delegated to an ordinary user -------------------------------------------

USER = os.environ.get("PYTEST_ISOLATE_ROOTLESS_USER", "")
PYTHON = os.environ.get("PYTEST_ISOLATE_ROOTLESS_PYTHON", "")
CONDITIONS = str(Path(__file__).with_name("conditions.py"))
MOUNT = "/sys/fs/cgroup"

needs_rootless_user = pytest.mark.skipif(
    not (USER and PYTHON),
    reason="needs PYTEST_ISOLATE_ROOTLESS_USER and PYTEST_ISOLATE_ROOTLESS_PYTHON (.ci/run)",
)


@dataclass
class Delegation:
    workspace: Path
    top: str
    """The group this test created under the cgroup2 root (removed at the end)."""
    base: str
    """The group delegated to the user, as /proc/self/cgroup shows it."""

    def run(self, *args: str, cgroup: str | None = None) -> subprocess.CompletedProcess[str]:
        """``args`` as the user, from inside ``cgroup`` (default: the delegated group)."""
        where = self.base if cgroup is None else cgroup
        condition = f"cgroup={where},user={USER}" if where else f"user={USER}"
        env = {**os.environ, "HOME": str(self.workspace), "TMPDIR": str(self.workspace)}
        return subprocess.run(
            [sys.executable, CONDITIONS, condition, "--", PYTHON, *args],
            cwd=self.workspace, env=env, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip

    def pytest(self, source: str, *args: str, cgroup: str | None = None) -> str:
        (self.workspace / "test_rootless_v2.py").write_text(source)
        result = self.run("-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                          "-rA", "--junitxml=out.xml", *args, cgroup=cgroup)  # fmt: skip
        return result.stdout + result.stderr

    def left(self) -> list[str]:
        """What is under the delegated group now, besides its own files: groups, enabled
        controllers, processes."""
        d = MOUNT + self.base
        found = [e.name for e in os.scandir(d) if e.is_dir()]
        found += [f"+{c}" for c in Path(d, "cgroup.subtree_control").read_text().split()]
        return found + [f"pid {p}" for p in Path(d, "cgroup.procs").read_text().split()]


def _delegate(path: str, uid: int, gid: int) -> None:
    d = MOUNT + path
    os.mkdir(d)
    for entry in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
        os.chown(os.path.join(d, entry), uid, gid)


Delegate = Callable[..., Delegation]


@pytest.fixture
def delegate() -> Iterator[Delegate]:
    """``delegate(passes_on="cpu memory pids")``: a group delegated to USER, under
    ``pytest-isolate-rootless-<PID>`` (which passes those controllers on to its children),
    and a workspace the user owns; both removed at the end."""
    user = pwd.getpwnam(USER)
    top = f"/{PREFIX}-rootless-{os.getpid()}"
    workspace = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-rootless-v2-"))
    os.chown(workspace, user.pw_uid, user.pw_gid)

    def make(passes_on: str = "cpu memory pids") -> Delegation:
        os.mkdir(MOUNT + top)
        control = " ".join(f"+{c}" for c in passes_on.split())
        Path(MOUNT + top, "cgroup.subtree_control").write_text(control)
        _delegate(f"{top}/scope", user.pw_uid, user.pw_gid)
        return Delegation(workspace, top, f"{top}/scope")

    try:
        yield make
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
        for dirpath, _, _ in sorted(os.walk(MOUNT + top), key=lambda t: -t[0].count("/")):
            os.rmdir(dirpath)  # only groups; EBUSY if a process survived (the test fails)


ROOTLESS_CAPS = (
    """
import os, time, pytest

def test_pytest_itself():
    print("PYTEST IN", open("/proc/self/cgroup").read().strip())

@pytest.mark.isolated(mem="64M")
def test_hog():
    print("SANDBOX IN", open("/proc/self/cgroup").read().strip())
    data = bytearray(200 * 2**20)
    for i in range(0, len(data), 4096):
        data[i] = 1

"""
    + FORK_BOMB
    + """
@pytest.mark.isolated(cpu=0.2)
def test_busy():
    end = time.process_time() + 0.5
    while time.process_time() < end:
        pass
"""
)


def _header(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("isolation:")]
    return line


@needs_rootless_user
def test_v2_rootless_caps_in_a_delegated_scope(delegate: Delegate) -> None:
    """The systemd-run scope: pytest is the delegated group's only process. It moves into a
    leaf of its own, the caps apply, and the group is left as it was found."""
    delegation = delegate()
    out = delegation.pytest(ROOTLESS_CAPS)
    assert _header(out).startswith("isolation: rootless, pid net mnt uts ipc user namespaces")
    assert _header(out).endswith(", cgroup v2 (cpu memory pids)"), out
    base = delegation.base
    assert f"PYTEST IN 0::{base}/{PREFIX}-" in out  # its leaf, pytest-isolate-<PID>.<START>
    assert f"SANDBOX IN 0::{base}/{PREFIX}/" in out
    assert (
        "The isolated test was killed during call: out of memory: the cgroup memory limit "
        "is 64.0 MiB (mem=67108864), peak usage"
    ) in out
    assert "fork refused after 7 children" in out
    assert "pids limit hit: the sandbox may hold 8 processes and threads (pids=8)" in out
    assert "isolated tests run without" not in out
    props = _properties(str(delegation.workspace / "out.xml"))
    assert props["test_hog"]["isolate_oom_kills"] == "1"
    assert 60 * 2**20 <= int(props["test_hog"]["isolate_peak_mem_bytes"]) <= 64 * 2**20
    assert int(props["test_fork_bomb"]["isolate_peak_pids"]) == 8
    assert int(props["test_busy"]["isolate_nr_throttled"]) > 0, props["test_busy"]
    assert "isolate_missing" not in props["test_busy"]
    assert delegation.left() == []


ROOTLESS_NO_CPU = """
import time, pytest

@pytest.mark.isolated(mem="64M")
def test_hog():
    data = bytearray(200 * 2**20)
    for i in range(0, len(data), 4096):
        data[i] = 1

@pytest.mark.isolated(cpu=0.2)
def test_busy():
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass

@pytest.mark.isolated
def test_plain():
    pass
"""


@needs_rootless_user
def test_v2_rootless_parent_without_cpu_keeps_memory_and_pids(delegate: Delegate) -> None:
    """The group named with --isolate-cgroup-root, pytest in a group below it (it need not
    move), and a parent that passes memory and pids on but not cpu (a default user@.service):
    the memory cap still applies; a test with a cpu cap is warned about and marked."""
    delegation = delegate("memory pids")
    below = f"{delegation.base}/shell"
    os.mkdir(MOUNT + below)  # root's, as a login shell's scope would be
    option = f"--isolate-cgroup-root={delegation.base}"
    out = delegation.pytest(ROOTLESS_NO_CPU, option, cgroup=below)
    assert _header(out).endswith(", cgroup v2 (memory pids)"), out
    assert "out of memory: the cgroup memory limit is 64.0 MiB" in out
    (warning,) = [line for line in out.splitlines() if "isolated tests run without" in line]
    assert (
        "isolated tests run without cpu cap (the cgroup v2 cpu controller is not available "
        "here); fix: the parent cgroup must pass them on to "
    ) in warning
    assert "Delegate=cpu memory pids" in warning
    props = _properties(str(delegation.workspace / "out.xml"))
    assert props["test_busy"]["isolate_missing"] == "cpu cap"
    assert "isolate_missing" not in props["test_plain"]
    assert props["test_hog"]["isolate_oom_kills"] == "1"
    assert delegation.left() == ["shell"]
    os.rmdir(MOUNT + below)
    strict = delegation.run("-m", "pytest", "-p", "no:cacheprovider", option, "--isolate-strict")
    assert strict.returncode == 4, strict.stdout + strict.stderr
    assert "missing cpu cap (the cgroup v2 cpu controller is not available here)" in (
        strict.stderr
    )
    assert delegation.left() == []


@needs_rootless_user
def test_v2_rootless_doctor(delegate: Delegate) -> None:
    delegation = delegate()
    result = delegation.run("-m", "pytest_isolate", "doctor")
    assert "[ok  ] cgroup caps: cgroup v2: cpu, memory, pids" in result.stdout, result.stdout
    assert delegation.left() == []
    outside = delegation.run("-m", "pytest_isolate", "doctor", cgroup="")  # in the root group
    assert outside.returncode == 1
    assert "[FAIL] cgroup caps: no writable cgroup hierarchy" in outside.stdout
    assert (
        "fix: start pytest as the only process of a cgroup delegated to you: systemd-run "
        "--user --scope -p Delegate=yes pytest ..."
    ) in outside.stdout
