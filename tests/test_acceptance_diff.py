"""End to end: ``--isolate-diff`` lists what each isolated test created, changed and
deleted outside its tmp_path and the shared paths: a report section, a junit property,
the session's summary; and nothing at all without the option. Checked from the host."""

from __future__ import annotations

import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import RunPytest, needs_cgroup_v1

pytestmark = needs_cgroup_v1
CONDITIONS = str(Path(__file__).with_name("conditions.py"))

WRITERS = """
import os, pathlib, pytest

TAG = "{tag}"

def test_writes(tmp_path):
    (tmp_path / "in-tmp-path").write_text("x")
    pathlib.Path(f"/tmp/pytest-isolate-{{TAG}}-new").write_text("x")
    os.makedirs(f"/var/tmp/pytest-isolate-{{TAG}}/a/b")
    pathlib.Path(f"/var/tmp/pytest-isolate-{{TAG}}/a/b/f").write_text("y")
    pathlib.Path("{shared}/from-the-test").write_text("shared")
    with open("{host}/changed", "a") as f:
        f.write("more")
    os.remove("{host}/deleted")

def test_pollutes_and_fails():
    os.makedirs(os.path.expanduser("~/.cache"), exist_ok=True)
    pathlib.Path(os.path.expanduser(f"~/.cache/pytest-isolate-{{TAG}}")).write_text("1")
    assert 0

def test_reads_only():
    assert os.listdir("/etc")
    import json, decimal  # imports may write bytecode caches: not listed
"""


@pytest.fixture
def tag() -> Iterator[str]:
    tag = uuid.uuid4().hex[:10]
    yield tag
    Path(f"/tmp/pytest-isolate-{tag}-new").unlink(missing_ok=True)  # if the snapshot leaked


@pytest.fixture
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    host = tmp_path_factory.mktemp("host-files")
    (host / "changed").write_text("host")
    (host / "deleted").write_text("host")
    return host


def _suite(pytester: pytest.Pytester, tag: str, host: Path) -> Path:
    shared = pytester.path / "shared"
    shared.mkdir()
    pytester.makepyfile(test_writers=WRITERS.format(tag=tag, shared=shared, host=host))
    return shared


def _properties(xml: Path) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        found[case.get("name", "")] = {
            p.get("name", ""): p.get("value", "") for p in case.iter("property")
        }
    return found


def test_changes_listed_per_test(
    pytester: pytest.Pytester, run: RunPytest, tag: str, host: Path
) -> None:
    shared = _suite(pytester, tag, host)
    result = run("--isolate-all", "--isolate-diff", f"--isolate-share={shared}", "-rA",
                 "--junitxml=out.xml")  # fmt: skip
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    writes = [
        f"A /tmp/pytest-isolate-{tag}-new",
        f"A /var/tmp/pytest-isolate-{tag}",
        f"A /var/tmp/pytest-isolate-{tag}/a",
        f"A /var/tmp/pytest-isolate-{tag}/a/b",
        f"A /var/tmp/pytest-isolate-{tag}/a/b/f",
        f"C {host}/changed",
        f"D {host}/deleted",
    ]
    props = _properties(pytester.path / "out.xml")
    assert sorted(props["test_writes"]["isolate_diff"].splitlines()) == sorted(writes)
    home = pytester.path  # pytester's HOME
    polluted = f"A {home}/.cache/pytest-isolate-{tag}"
    assert props["test_pollutes_and_fails"]["isolate_diff"] == f"A {home}/.cache\n{polluted}"
    assert props["test_reads_only"]["isolate_diff"] == ""
    # The failing test's section is in its failure report; the summary names both.
    failure = out.split("_ test_pollutes_and_fails _")[1].split("PASSES")[0]
    assert "- isolate diff -" in failure and polluted in failure
    summary = out.split("isolate diff: what tests changed outside tmp_path and shares")[1]
    summary = summary.split("short test summary info")[0]
    assert "test_writers.py::test_writes\n" in summary
    assert f"  {polluted}" in summary
    assert "test_reads_only" not in summary
    assert "in-tmp-path" not in out and "from-the-test" not in out
    # The host is as it was, the shared path has the test's file.
    assert not Path(f"/tmp/pytest-isolate-{tag}-new").exists()
    assert not Path(f"/var/tmp/pytest-isolate-{tag}").exists()
    assert (host / "changed").read_text() == "host" and (host / "deleted").exists()
    assert (shared / "from-the-test").read_text() == "shared"


def test_nothing_without_the_option(
    pytester: pytest.Pytester, run: RunPytest, tag: str, host: Path
) -> None:
    _suite(pytester, tag, host)
    result = run("--isolate-all", "-rA", "--junitxml=out.xml")
    result.assert_outcomes(passed=2, failed=1)
    assert "isolate diff" not in result.stdout.str()
    props = _properties(pytester.path / "out.xml")
    assert all("isolate_diff" not in p for p in props.values())


def test_ini_option_and_a_quiet_session(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makeini("[pytest]\nisolate_diff = true\n")
    pytester.makepyfile("import pytest\n\n@pytest.mark.isolated\ndef test_x(): pass\n")
    result = run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*isolate diff: what tests changed*", "no isolated test changed a file"]
    )
    pytester.makeini("[pytest]\nisolate_diff = perhaps\n")
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini option isolate_diff*"])


def test_with_xdist_the_controller_lists_the_workers_changes(
    pytester: pytest.Pytester, run: RunPytest, tag: str, host: Path
) -> None:
    _suite(pytester, tag, host)
    result = run("--isolate-all", "--isolate-diff", "-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=2, failed=1)
    summary = result.stdout.str().split("isolate diff: what tests changed")[1]
    assert f"A /var/tmp/pytest-isolate-{tag}/a/b/f" in summary
    assert f"A {pytester.path}/.cache/pytest-isolate-{tag}" in summary


def test_a_host_without_a_snapshot_says_so_once(pytester: pytest.Pytester, tag: str) -> None:
    pytester.makepyfile(
        "import pytest\n\n@pytest.mark.isolated\n@pytest.mark.parametrize('n', range(3))\n"
        "def test_x(n): pass\n"
    )
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
               "--isolate-diff"]  # fmt: skip
    result = pytester.run(sys.executable, CONDITIONS, "seccomp-unshare", "--", *command)
    result.assert_outcomes(passed=3, warnings=2)
    out = result.stdout.str()
    assert out.count("--isolate-diff lists nothing on this host (no overlay snapshot") == 1, out
    assert "--isolate-strict makes a host without a snapshot an error" in out
