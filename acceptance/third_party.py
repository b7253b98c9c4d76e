#!/usr/bin/env python3
"""Acceptance on third-party code: run pinned projects' own test suites plainly
and under ``--isolate-all`` and require the same outcome for every test.

For each project in ``PROJECTS`` the script

1. downloads the pinned sdist from PyPI with ``pip download`` (nothing is
   vendored into this repository) and checks its sha256;
2. makes one venv per project with the project (editable, from the unpacked
   sdist), its pinned test dependencies, pinned pytest and this repository
   (``pip install -e``);
3. unpacks a fresh copy of the sdist and runs its suite plainly, then unpacks a
   fresh copy again and runs it with ``--isolate-all``, each with
   ``--junitxml``; then both again with ``-n 2`` (pytest-xdist; not with
   ``--no-xdist``);
4. compares the outcome of every test, plain against isolated, without and with
   ``-n 2``. A difference fails the run unless the project lists it in
   ``expected`` with the reason isolation causes it; those are printed per test;
5. compares the warnings counts the same way (``warning_counts``: pytest-isolate's
   own warnings are counted apart); a difference fails the run.

It prints the wall time of both runs and the overhead per test.

Standard library only. See acceptance/README.md.

Exit status: 0 if every suite's outcomes match (up to the listed differences);
1 if a test's outcome differs without an entry in the table, or a run ended
abnormally (interrupted, internal error, usage error, no tests); 2 if a setup
step failed (download, checksum, venv) or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from warning_counts import WarningCount, count_warnings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"

PYTEST_PIN = "pytest==9.2.0"
XDIST_PINS = ("pytest-xdist==3.8.0", "execnet==2.1.2")

# Options for both runs. The cache provider is off so that the first run leaves
# nothing for the second (each run also gets a freshly unpacked tree).
COMMON_ARGS = ("-q", "-p", "no:cacheprovider", "-o", "console_output_style=classic")
# Only for the isolated run: a hang becomes a failed test instead of a stuck lane.
ISOLATE_ARGS = ("--isolate-all", "--isolate-timeout", "300")

PLAIN, ISOLATED = "plain", "isolated"
PLAIN_XDIST, ISOLATED_XDIST = "plain -n 2", "isolated -n 2"
XDIST_ARGS = ("-n", "2")

# pytest exit codes that mean the suite ran to the end: all passed, or some failed.
COMPLETED_EXIT_CODES = (0, 1)

SCRUBBED_ENV = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")


# --------------------------------------------------------------------------
# The pinned projects
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Deselected:
    """A test left out of both runs, with the reason (it fails or flakes plainly)."""

    nodeid: str
    reason: str


@dataclass(frozen=True)
class UncountedWarning:
    """Warnings left out of the counts compared, with the reason (their number varies
    plainly). ``fragment``: a part of the message's first line in the warnings summary."""

    fragment: str
    reason: str


@dataclass(frozen=True)
class ExpectedDifference:
    """A test whose outcome differs because isolation is doing its job.

    ``key`` is the junitxml key of the test (see ``testcase_key``): the dotted
    class name, ``::``, and the test name with its parameters.
    """

    key: str
    plain: str
    isolated: str
    reason: str


@dataclass(frozen=True)
class Project:
    name: str
    version: str
    sha256: str
    why: str
    """What this suite exercises, in a few words."""
    test_args: tuple[str, ...]
    """Arguments to pytest after the common ones, run from the unpacked sdist."""
    config: str = "pyproject.toml"
    """The project's pytest configuration file, passed with ``-c``. Without it,
    a tree with no pytest section would pick up a configuration from a parent
    directory (this repository's, when the cache is in ``acceptance/``)."""
    deps: tuple[str, ...] = ()
    """Test dependencies, each pinned with ``==``."""
    env: Mapping[str, str] = field(default_factory=dict)
    deselected: tuple[Deselected, ...] = ()
    expected: tuple[ExpectedDifference, ...] = ()
    no_xdist: str = ""
    """Why the suite cannot run under ``-n 2`` at all (then only the runs without)."""
    uncounted: tuple[UncountedWarning, ...] = ()

    @property
    def slug(self) -> str:
        return f"{self.name}-{self.version}"


PROJECTS: tuple[Project, ...] = (
    Project(
        name="python-dotenv",
        version="1.2.4",
        sha256="f0d53e69935a851c0dcc78f3ab7aaccd8cabef0b92382b576b824212902873c0",
        why="files: tmp dirs, chdir, .env discovery up the tree, FIFOs, the CLI in subprocesses",
        test_args=("tests",),
        deps=("click==8.5.1",),
    ),
    Project(
        name="sh",
        version="2.4.0",
        sha256="a250aef68509ed93419c9a1d90b0647cd5cbe26107ba94d3717ef5b6d595ffd9",
        why="subprocesses: ptys, pipes, process groups, signals, background jobs, timeouts",
        test_args=("tests",),
        # No [tool.pytest] section: -c makes the configuration empty, as in sh's tox run.
        env={"SH_TESTS_RUNNING": "1", "SH_TESTS_USE_SELECT": "0"},
        no_xdist="its tests are ordered at random (os.urandom) in each process, and xdist"
        " refuses workers that collect different orders",
        uncounted=(
            UncountedWarning(
                "ResourceWarning: unclosed file",
                "a file a test leaked, reported when the garbage collector finalizes it:"
                " plainly in a later test or not at all (1 plain run in 3 here); isolated,"
                " the test process exits first",
            ),
        ),
        deselected=(
            Deselected(
                "tests/sh_test.py::FunctionalTests::test_general_signal",
                "flaky plainly: it races its child, expecting SIGINT to land after the"
                " child's `i += 1` (failed plainly once, isolated in most runs)",
            ),
        ),
    ),
    Project(
        name="trio",
        version="0.35.0",
        sha256="7efb295c78a0ecd1235c5759e620b5da564ca80d2efcb0055423588547248b96",
        why="async I/O: sockets, TLS, DTLS, signals, subprocesses, threads, asyncio guest mode",
        # --run-slow adds trio's slow socket, TLS, subprocess and thread tests.
        test_args=("src/trio", "--run-slow", "--ignore=src/trio/_tests/tools"),
        deps=(
            "async_generator==1.10",
            "pyOpenSSL==26.4.0",
            "trustme==1.2.1",
        ),
        deselected=(
            Deselected(
                "src/trio/_tests/test_exports.py::test_static_tool_sees_all_symbols",
                "runs pylint, jedi, mypy and pyright, which are not installed here (fails plainly)",
            ),
            Deselected(
                "src/trio/_tests/test_exports.py::test_static_tool_sees_class_members",
                "runs jedi and mypy, which are not installed here (fails plainly)",
            ),
            # --ignore=src/trio/_tests/tools: those modules need astor, isort and
            # PyYAML, trio's code generators; they do not touch the runtime.
        ),
    ),
    Project(
        name="attrs",
        version="26.1.0",
        sha256="d03ceb89cb322a8fd706d4fb91940737b6642aa36998fe130a9bc96c985eff32",
        why="1000+ tests, hypothesis property tests, pickling, gc and weakrefs",
        test_args=("tests",),
        deps=("hypothesis==6.170.17", "Pympler==1.1", "cloudpickle==3.1.3"),
        deselected=(
            Deselected(
                "tests/test_converters.py::TestPipe::test_wrapped_annotation",
                "fails plainly on CPython 3.11.7 (the return annotation is not found)",
            ),
        ),
    ),
)


# --------------------------------------------------------------------------
# Outcomes from junitxml (pure)
# --------------------------------------------------------------------------

PASSED, FAILED, ERROR, SKIPPED, XFAILED = "passed", "failed", "error", "skipped", "xfailed"


def testcase_key(classname: str, name: str) -> str:
    """The key of one test: ``tests.test_cli::test_run[a-b]``.

    junitxml does not carry the node id, but ``classname`` and ``name`` are
    unique per test and the same in both runs, which is all a comparison needs.
    """
    return f"{classname}::{name}" if classname else name


def testcase_outcome(case: ET.Element) -> str:
    """The outcome of one ``<testcase>`` element."""
    for child in case:
        if child.tag == "failure":
            return FAILED
        if child.tag == "error":
            return ERROR
        if child.tag == "skipped":
            return XFAILED if child.get("type") == "pytest.xfail" else SKIPPED
    return PASSED


def parse_junitxml(text: str) -> dict[str, str]:
    """Map each test's key to its outcome.

    pytest writes a second ``<testcase>`` for a test whose teardown errors after
    its call failed; the outcomes are then joined: ``failed+error``.
    """
    root = ET.fromstring(text)  # our own pytest run wrote it
    outcomes: dict[str, str] = {}
    for case in root.iter("testcase"):
        key = testcase_key(case.get("classname", ""), case.get("name", ""))
        outcome = testcase_outcome(case)
        outcomes[key] = f"{outcomes[key]}+{outcome}" if key in outcomes else outcome
    return outcomes


# --------------------------------------------------------------------------
# The comparison (pure)
# --------------------------------------------------------------------------

MISSING = "missing"


@dataclass(frozen=True)
class Difference:
    key: str
    plain: str
    isolated: str
    reason: str | None
    """The table's reason if the difference is expected, else None."""


@dataclass(frozen=True)
class Comparison:
    identical: int
    expected: tuple[Difference, ...]
    unexpected: tuple[Difference, ...]
    stale: tuple[ExpectedDifference, ...]
    """Table entries whose difference did not happen this time."""

    @property
    def ok(self) -> bool:
        return not self.unexpected


def compare(
    plain: Mapping[str, str],
    isolated: Mapping[str, str],
    table: Iterable[ExpectedDifference] = (),
) -> Comparison:
    """Compare per-test outcomes; differences not in ``table`` are unexpected.

    A table entry matches only the exact pair of outcomes it names. A test
    that is in one run and not in the other is a difference too (``missing``).
    """
    entries = {entry.key: entry for entry in table}
    identical = 0
    expected: list[Difference] = []
    unexpected: list[Difference] = []
    for key in sorted(set(plain) | set(isolated)):
        p, i = plain.get(key, MISSING), isolated.get(key, MISSING)
        if p == i:
            identical += 1
            continue
        entry = entries.get(key)
        if entry is not None and (entry.plain, entry.isolated) == (p, i):
            expected.append(Difference(key, p, i, entry.reason))
        else:
            unexpected.append(Difference(key, p, i, None))
    seen = {d.key for d in expected}
    stale = tuple(entry for key, entry in entries.items() if key not in seen)
    return Comparison(identical, tuple(expected), tuple(unexpected), stale)


def overhead_ms_per_test(plain_s: float, isolated_s: float, tests: int) -> float | None:
    """Extra wall time of the isolated run per test, in milliseconds."""
    if tests <= 0:
        return None
    return (isolated_s - plain_s) * 1000.0 / tests


# --------------------------------------------------------------------------
# Download, unpack, venv
# --------------------------------------------------------------------------


class SetupError(Exception):
    """A step before the test runs failed; the comparison cannot be made."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checked(argv: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise SetupError(f"{what} failed ({result.returncode}): {' '.join(argv)}\n{tail}")


def sdist_filename(project: Project) -> str:
    """The sdist's file name under PEP 625 (``python_dotenv-1.2.4.tar.gz``)."""
    return f"{project.name.replace('-', '_').lower()}-{project.version}.tar.gz"


def fetch_sdist(project: Project, cache: Path) -> Path:
    """The verified sdist in ``cache/sdists``, downloaded if needed."""
    directory = cache / "sdists"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / sdist_filename(project)
    if not path.exists():
        print(f"  downloading {project.name}=={project.version}", flush=True)
        # --no-binary for the project only: its build dependencies may be
        # wheels (pip builds the sdist's metadata even with --no-deps).
        _checked(
            [
                sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                "--no-binary", project.name, "-d", str(directory),
                f"{project.name}=={project.version}",
            ],
            f"pip download {project.name}",
        )  # fmt: skip
    if not path.exists():
        raise SetupError(f"pip download did not produce {path}")
    actual = sha256_of(path)
    if actual != project.sha256:
        path.unlink()
        raise SetupError(f"{path.name}: sha256 {actual} does not match the pinned {project.sha256}")
    return path


def unpack(sdist: Path, destination: Path) -> Path:
    """A fresh copy of the sdist's tree at ``destination``; returns it."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.with_name(destination.name + ".unpacking")
    if staging.exists():
        shutil.rmtree(staging)
    with tarfile.open(sdist) as archive:
        tops = {name.split("/", 1)[0] for name in archive.getnames()}
        if len(tops) != 1:
            raise SetupError(f"{sdist.name}: expected one top-level directory, got {sorted(tops)}")
        if hasattr(tarfile, "data_filter"):
            archive.extractall(staging, filter="data")
        else:  # pragma: no cover (Python without the extraction filters)
            archive.extractall(staging)  # a pinned, checksummed sdist
    (staging / tops.pop()).rename(destination)
    staging.rmdir()
    return destination


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def install_fingerprint(project: Project, repo: Path) -> str:
    """What the venv was installed from; the plugin's own dependencies included."""
    plugin = sha256_of(repo / "pyproject.toml")
    pins = [PYTEST_PIN, *XDIST_PINS, *project.deps]
    lines = [project.slug, project.sha256, *pins, str(repo), plugin]
    return "\n".join(lines) + "\n"


def ensure_venv(project: Project, tree: Path, cache: Path, repo: Path) -> Path:
    """The project's venv, created and installed unless an identical one exists."""
    venv = cache / "venvs" / project.slug
    stamp = venv / "third_party.installed"
    fingerprint = install_fingerprint(project, repo)
    python = venv_python(venv)
    if stamp.exists() and stamp.read_text() == fingerprint and python.exists():
        print(f"  venv {venv}: reused", flush=True)
        return python
    print(f"  venv {venv}: installing", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    _checked([sys.executable, "-m", "venv", str(venv)], "venv")
    _checked(
        [
            str(python), "-m", "pip", "install", "-q", PYTEST_PIN, *XDIST_PINS, *project.deps,
            "-e", str(repo), "-e", str(tree),
        ],
        f"pip install for {project.name}",
    )  # fmt: skip
    stamp.write_text(fingerprint)
    return python


# --------------------------------------------------------------------------
# Running the suites
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    mode: str
    exit_code: int
    wall_s: float
    outcomes: dict[str, str]
    summary: str
    warnings: WarningCount = field(default_factory=lambda: WarningCount(0, 0))


def run_env(python: Path, project: Project) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    # The venv's scripts (a project's own CLI, say) come first on PATH, as in tox.
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', os.defpath)}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(project.env)
    return env


def pytest_argv(python: Path, project: Project, mode: str, junitxml: Path, tree: Path) -> list[str]:
    argv = [str(python), "-m", "pytest", *COMMON_ARGS, f"--junitxml={junitxml}"]
    argv.extend(["-c", str(tree / project.config), f"--rootdir={tree}"])
    if mode in (ISOLATED, ISOLATED_XDIST):
        argv.extend(ISOLATE_ARGS)
    if mode in (PLAIN_XDIST, ISOLATED_XDIST):
        argv.extend(XDIST_ARGS)
    for d in project.deselected:
        argv.append(f"--deselect={d.nodeid}")
    argv.extend(project.test_args)
    return argv


def run_suite(
    project: Project, python: Path, sdist: Path, cache: Path, mode: str, timeout: float
) -> RunResult:
    tree = unpack(sdist, cache / "src" / project.slug)
    results = cache / "results"
    results.mkdir(parents=True, exist_ok=True)
    name = mode.replace(" -n ", "-n")
    junitxml = results / f"{project.slug}-{name}.xml"
    log = results / f"{project.slug}-{name}.log"
    junitxml.unlink(missing_ok=True)
    argv = pytest_argv(python, project, mode, junitxml, tree)
    print(f"  {mode:13} pytest {' '.join(argv[3:])}", flush=True)
    start = time.monotonic()
    with log.open("w") as out:
        try:
            code = subprocess.run(
                argv,
                cwd=tree,
                env=run_env(python, project),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    wall = time.monotonic() - start
    text = log.read_text(errors="replace")
    lines = text.splitlines()
    summary = lines[-1].strip("= ") if lines else "(no output)"
    if code == -1:
        summary = f"timed out after {timeout:.0f} s; log {log}"
    outcomes = parse_junitxml(junitxml.read_text()) if junitxml.exists() else {}
    uncounted = [u.fragment for u in project.uncounted]
    return RunResult(mode, code, wall, outcomes, summary, count_warnings(text, uncounted))


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """A plain run and an isolated run, both with or both without ``-n 2``."""

    plain: RunResult
    isolated: RunResult
    comparison: Comparison

    @property
    def completed(self) -> bool:
        return all(
            r.exit_code in COMPLETED_EXIT_CODES and r.outcomes for r in (self.plain, self.isolated)
        )

    @property
    def warnings_match(self) -> bool:
        """The suite's own warnings (not pytest-isolate's) are as many in both runs."""
        return self.plain.warnings.tests == self.isolated.warnings.tests

    @property
    def ok(self) -> bool:
        return self.completed and self.comparison.ok and self.warnings_match


@dataclass(frozen=True)
class SuiteReport:
    project: Project
    pairs: tuple[Pair, ...]
    """Without ``-n 2``, then (unless ``--no-xdist``) with it."""

    @property
    def plain(self) -> RunResult:
        return self.pairs[0].plain

    @property
    def isolated(self) -> RunResult:
        return self.pairs[0].isolated

    @property
    def comparison(self) -> Comparison:
        return self.pairs[0].comparison

    @property
    def runs_completed(self) -> bool:
        return all(pair.completed for pair in self.pairs)

    @property
    def ok(self) -> bool:
        return all(pair.ok for pair in self.pairs)

    @property
    def tests(self) -> int:
        return len(self.plain.outcomes)


def counts(outcomes: Mapping[str, str]) -> str:
    tally: dict[str, int] = {}
    for outcome in outcomes.values():
        tally[outcome] = tally.get(outcome, 0) + 1
    return ", ".join(f"{n} {o}" for o, n in sorted(tally.items(), key=lambda kv: -kv[1]))


def _warnings_text(count: WarningCount) -> str:
    own = f" (+{count.own} of pytest-isolate's own)" if count.own else ""
    apart = f" (+{count.uncounted} not compared)" if count.uncounted else ""
    return f"{count.tests} warnings{own}{apart}"


def print_pair(pair: Pair) -> None:
    c = pair.comparison
    for run in (pair.plain, pair.isolated):
        status = "" if run.exit_code in COMPLETED_EXIT_CODES else f" [exit {run.exit_code}]"
        print(f"  {run.mode:13} {run.wall_s:7.1f} s  {counts(run.outcomes)}{status}")
        print(f"                pytest: {run.summary}")
    total = c.identical + len(c.expected) + len(c.unexpected)
    print(f"  {pair.isolated.mode}: identical outcomes: {c.identical} of {total}")
    for d in c.expected:
        print(f"  EXPECTED difference {d.key}: plain {d.plain}, isolated {d.isolated}")
        print(f"      because: {d.reason}")
    for entry in c.stale:
        print(
            f"  note: listed difference did not happen: {entry.key} "
            f"(table: plain {entry.plain}, isolated {entry.isolated})"
        )
    for d in c.unexpected:
        print(f"  UNEXPECTED difference {d.key}: plain {d.plain}, isolated {d.isolated}")
    plain, isolated = _warnings_text(pair.plain.warnings), _warnings_text(pair.isolated.warnings)
    if pair.warnings_match:
        print(f"  {pair.isolated.mode}: same warnings count: {isolated}")
    else:
        print(f"  WARNINGS DIFFER: {pair.plain.mode} {plain}, {pair.isolated.mode} {isolated}")
    if not pair.completed:
        print("  RUN PROBLEM: a run did not complete (see the exit code and the log)")


def print_suite(report: SuiteReport) -> None:
    for skip in report.project.deselected:
        print(f"  deselected in every run: {skip.nodeid}\n      reason: {skip.reason}")
    for warning in report.project.uncounted:
        print(f"  warnings not compared: {warning.fragment!r}\n      reason: {warning.reason}")
    for pair in report.pairs:
        print_pair(pair)


def print_table(reports: Sequence[SuiteReport]) -> None:
    print("\n== summary")
    header = (
        f"{'project':22} {'tests':>6} {'plain s':>8} {'isolated s':>10} "
        f"{'ms/test':>8} {'expected':>8} {'unexpected':>10} {'warnings':>11}  result"
    )
    print(header)
    print("-" * len(header))
    for r in reports:
        per_test = overhead_ms_per_test(r.plain.wall_s, r.isolated.wall_s, r.tests)
        per = f"{per_test:+8.1f}" if per_test is not None else f"{'-':>8}"
        warned = "same" if all(pair.warnings_match for pair in r.pairs) else "DIFFER"
        unexpected = sum(len(pair.comparison.unexpected) for pair in r.pairs)
        print(
            f"{r.project.slug:22} {r.tests:6d} {r.plain.wall_s:8.1f} {r.isolated.wall_s:10.1f} "
            f"{per} {len(r.comparison.expected):8d} {unexpected:10d} {warned:>11}  "
            f"{'ok' if r.ok else 'FAIL'}"
        )


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def die(message: str) -> NoReturn:
    print(f"\nthird_party.py: ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


# Signals a suite may send to its children and expect to act (sh's tests send all of them).
RESTORED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
)


def restore_signal_defaults() -> None:
    """Un-ignore the signals the suites' children inherit.

    An ignored signal stays ignored across fork and exec. nohup ignores SIGHUP,
    and a shell without job control ignores SIGINT and SIGQUIT in a background
    job; sh's tests that kill a child with those would then fail in both runs.
    """
    for sig in RESTORED_SIGNALS:
        if signal.getsignal(sig) == signal.SIG_IGN:
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="sdists, unpacked trees, venvs and results (default: %(default)s)",
    )
    parser.add_argument(
        "--repo",
        type=Path,
        default=REPO_ROOT,
        help="pytest-isolate checkout to `pip install -e` (default: %(default)s)",
    )
    parser.add_argument(
        "--project",
        action="append",
        choices=[p.name for p in PROJECTS],
        help="run only this project (repeatable; default: all)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds for one pytest run before it is killed (default: %(default)s)",
    )
    parser.add_argument(
        "--no-xdist",
        action="store_true",
        help="skip the second plain and isolated runs, with -n 2 (pytest-xdist)",
    )
    parser.add_argument("--list", action="store_true", help="print the pinned projects and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    selected = [p for p in PROJECTS if not args.project or p.name in args.project]
    if args.list:
        for p in selected:
            print(f"{p.slug:22} sha256 {p.sha256}\n{'':22} {p.why}")
        return 0
    restore_signal_defaults()
    cache: Path = args.cache.resolve()
    repo: Path = args.repo.resolve()
    if not (repo / "pyproject.toml").exists():
        die(f"--repo {repo}: no pyproject.toml there")
    reports: list[SuiteReport] = []
    for project in selected:
        print(f"\n== {project.slug}: {project.why}", flush=True)
        try:
            sdist = fetch_sdist(project, cache)
            tree = unpack(sdist, cache / "src" / project.slug)
            python = ensure_venv(project, tree, cache, repo)
        except SetupError as exc:
            die(str(exc))
        xdist = not (args.no_xdist or project.no_xdist)
        if project.no_xdist and not args.no_xdist:
            print(f"  not run with -n 2: {project.no_xdist}")
        modes = [(PLAIN, ISOLATED)] + ([(PLAIN_XDIST, ISOLATED_XDIST)] if xdist else [])
        pairs = []
        for plain_mode, isolated_mode in modes:
            plain = run_suite(project, python, sdist, cache, plain_mode, args.timeout)
            isolated = run_suite(project, python, sdist, cache, isolated_mode, args.timeout)
            comparison = compare(plain.outcomes, isolated.outcomes, project.expected)
            pairs.append(Pair(plain, isolated, comparison))
        report = SuiteReport(project, tuple(pairs))
        print_suite(report)
        reports.append(report)
    print_table(reports)
    failed = [r.project.slug for r in reports if not r.ok]
    if failed:
        print(f"\nFAIL: {', '.join(failed)}")
        return 1
    print(
        "\nok: every test has the same outcome plainly and isolated, or a listed reason,"
        " and every run pair the same warnings count"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
