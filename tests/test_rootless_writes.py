"""End to end, rootless: writes work wherever the user could write without isolation,
and vanish afterwards, even where the owner or group is not mapped in the sandbox's user
namespace (overlayfs refuses to copy such entries up: EOVERFLOW).

Run as root with ``PYTEST_ISOLATE_ROOTLESS_USER`` and ``PYTEST_ISOLATE_ROOTLESS_PYTHON``
(see ``.ci/run``): this test lays out entries of root's on the host, runs the inner
pytest as that user and checks the host afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import IS_LINUX, IS_ROOT

CONDITIONS = str(Path(__file__).with_name("conditions.py"))
USER = os.environ.get("PYTEST_ISOLATE_ROOTLESS_USER", "")
PYTHON = os.environ.get("PYTEST_ISOLATE_ROOTLESS_PYTHON", "")

pytestmark = pytest.mark.skipif(
    not (IS_LINUX and IS_ROOT and USER and PYTHON),
    reason="needs root, PYTEST_ISOLATE_ROOTLESS_USER and PYTEST_ISOLATE_ROOTLESS_PYTHON "
    "(see .ci/run)",
)

SUITE = """
import os, pytest

WORK = {work!r}
VAR_TMP = {var_tmp!r}


def _write(path, data="inside"):
    with open(path, "a") as f:
        f.write(data)
    with open(path) as f:
        return f.read()


def test_sticky_world_writable_root_dir():
    assert _write(VAR_TMP) == "inside"  # /var/tmp: root's, mode 1777
    assert os.stat("/var/tmp").st_mode & 0o7777 == 0o1777


def test_own_dir_with_roots_group():
    assert _write(f"{{WORK}}/group-root/new") == "inside"
    assert _write(f"{{WORK}}/group-root/mine/deeper") == "inside"  # below it: copied up too


def test_roots_shared_dir_in_own_tree():
    assert _write(f"{{WORK}}/shared/new") == "inside"


def test_roots_writable_file():
    assert _write(f"{{WORK}}/root-0666") == "hostinside"


def test_own_file_with_roots_group():
    assert _write(f"{{WORK}}/group-root-file") == "hostinside"
    os.chmod(f"{{WORK}}/group-root-file", 0o600)


def test_rename_roots_file_in_own_dir():
    os.rename(f"{{WORK}}/root-0644", f"{{WORK}}/renamed")
    with open(f"{{WORK}}/renamed") as f:
        assert f.read() == "host"


def test_roots_large_file_fails_as_warned():
    with pytest.raises(OSError) as info:  # not copied into every sandbox: as the warning says
        open(f"{{WORK}}/root-large", "a")
    assert info.value.errno == 75


def test_roots_read_only_file_shows_read_only():
    # The stand-in is the test's own: its owner bits say what the user may do on the host.
    st = os.stat(f"{{WORK}}/group-root/root-0644")
    assert (st.st_uid, st.st_mode & 0o7777) == (os.getuid(), 0o444)
    with open(f"{{WORK}}/group-root/root-0644") as f:
        assert f.read() == "host"
"""


@dataclass
class Layout:
    work: Path
    var_tmp: str


@pytest.fixture
def layout() -> Iterator[Layout]:
    user = pwd.getpwnam(USER)
    uid, gid = user.pw_uid, user.pw_gid
    work = Path(tempfile.mkdtemp(prefix="pytest-isolate-rootless-writes-"))
    os.chmod(work, 0o755)
    os.chown(work, uid, gid)
    (work / "group-root").mkdir(mode=0o775)
    os.chown(work / "group-root", uid, 0)
    (work / "group-root" / "mine").mkdir()
    os.chown(work / "group-root" / "mine", uid, gid)
    (work / "shared").mkdir()
    os.chmod(work / "shared", 0o1777)
    for name, mode, owner in (("root-0666", 0o666, (0, 0)), ("root-0644", 0o644, (0, 0)),
                              ("group-root-file", 0o664, (uid, 0)),
                              ("group-root/root-0644", 0o644, (0, 0))):  # fmt: skip
        (work / name).write_text("host")
        os.chmod(work / name, mode)
        os.chown(work / name, *owner)
    (work / "root-large").write_bytes(b"x" * (2 << 20))  # over FILE_LIMIT
    os.chmod(work / "root-large", 0o666)
    var_tmp = f"/var/tmp/pytest-isolate-rootless-writes-{uuid.uuid4().hex}"
    try:
        yield Layout(work, var_tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        Path(var_tmp).unlink(missing_ok=True)


def _snapshot(top: Path) -> dict[str, tuple[int, int, int, int, str]]:
    seen = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = Path(path).read_bytes()[:16].decode() if os.path.isfile(path) else ""
            seen[os.path.relpath(path, top)] = (st.st_uid, st.st_gid, st.st_mode, st.st_size, data)
    return seen


def test_rootless_writes_where_the_user_may(layout: Layout) -> None:
    work = layout.work
    (work / "test_writes.py").write_text(SUITE.format(work=str(work), var_tmp=layout.var_tmp))
    os.chown(work / "test_writes.py", pwd.getpwnam(USER).pw_uid, -1)
    before = _snapshot(work)
    command = [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-rA",
               "--isolate-all"]  # fmt: skip
    env = {**os.environ, "HOME": str(work), "TMPDIR": str(work)}
    result = subprocess.run(
        [sys.executable, CONDITIONS, f"user={USER}", "--", *command],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = result.stdout
    assert "isolation: rootless, pid net mnt uts ipc user namespaces" in out, out + result.stderr
    assert "8 passed" in out, out
    too_large = f"{work}/root-large: owned by an id the sandbox cannot map, and too large"
    assert too_large in out, out
    assert result.returncode == 0, out + result.stderr
    assert _snapshot(work) == before  # every write stayed in the sandbox
    assert not os.path.exists(layout.var_tmp)
