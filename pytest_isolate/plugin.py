"""pytest hook implementations. Thin: each delegates to a module with one concern."""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from . import integrations, wire
from ._compat import teardown_to
from .builder.plan import BuildPlan
from .cgroups.v2_delegation import leave_delegated
from .controller import changes, lifecycle, prefork
from .controller.crashes import error_reports
from .controller.fork_only import run_forked
from .controller.outcome import Outcome
from .controller.session import Session
from .controller.turn import run_isolated
from .host.isolation import PROPERTY, Isolation, assess, header_line, strict_error, warning_text
from .integrations import coverage, reruns, shares, timeout
from .reporting import Stats
from .spec import (
    BUILTIN_DEFAULTS,
    SPEC_KEYS,
    IsolationSpec,
    Settings,
    SpecError,
    check_contradictions,
    decide,
    option_name,
    parse_bool,
    parse_shares,
    resolve_cgroup_root,
    resolve_defaults,
    resolve_strict,
)
from .testprocess.main import current_channel
from .wire.warnings import serialize_warning

MARKER = "isolated"


@dataclass
class State:
    settings: Settings
    stats: Stats
    isolation: Isolation | None = None
    """What this host gives (probed once per session); None with --no-isolate."""
    session: Session | None = None


STATE_KEY = pytest.StashKey[State]()
DECISION_KEY = pytest.StashKey["IsolationSpec | str | None"]()

_HELP = {
    "cpu": "CPU cap in CPUs (0.3 = 30%% of one CPU)",
    "mem": "memory cap: bytes, or 128M / 1.5GiB / 500MB",
    "pids": "cap on processes+threads",
    "timeout": "seconds before the sandbox is killed",
    "hostname": "hostname inside the sandbox",
    "net": "network: 'private' (only lo) or 'host' (the host's)",
    "cpu_period": "the CPU cap's period: 100ms (the kernel's) up to 1s",
    "cpuset": "the CPUs the sandbox may run on, e.g. 0 or 0-1",
    "noise": "busy processes started beside each test (CPU contention)",
    "clock_offset": "seconds added to the monotonic clock (a time namespace), e.g. 30d",
    "seed": "random's seed (and pytest-randomly's) in each test process",
}
_DEBUGGER = (
    "pytest-isolate: {option} cannot stop in an isolated test (it runs in a forked "
    "process in a sandbox); add --no-isolate to debug it in pytest's own process."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("isolate", "test isolation in Linux sandboxes (pytest-isolate)")
    group.addoption("--isolate-all", action="store_true", default=None,
                    help="run every test isolated, as if marked @pytest.mark.isolated")  # fmt: skip
    group.addoption("--no-isolate", action="store_true", default=False,
                    help="run every test in-process, ignoring markers (debugging)")  # fmt: skip
    parser.addini("isolate_all", "run every test isolated (true/false)", default="false")
    group.addoption("--isolate-strict", action="store_true", default=None,
                    help="fail the session if this host cannot give full isolation")  # fmt: skip
    parser.addini("isolate_strict", "fail if the host cannot isolate fully (true/false)",
                  default="false")  # fmt: skip
    group.addoption("--isolate-cgroup-root", dest="isolate_cgroup_root", metavar="PATH",
                    default=None, help="cgroup path (as in /proc/self/cgroup) to create "
                    "the sandboxes' cgroups under, e.g. a subtree delegated to you")  # fmt: skip
    parser.addini("isolate_cgroup_root", "cgroup path for the sandboxes' cgroups", default="")
    for key in SPEC_KEYS:
        group.addoption(option_name(key), dest=f"isolate_{key}", metavar="VALUE", default=None,
                        help=f"default {_HELP[key]} ('none' for no cap)")  # fmt: skip
        parser.addini(f"isolate_{key}", f"default {_HELP[key]}".replace("%%", "%"), default="")
    group.addoption("--isolate-share", dest="isolate_share", action="append", default=[],
                    metavar="PATH", help="a host path every sandbox may write to (the writes "
                    "stay on the host); repeat for more")  # fmt: skip
    parser.addini("isolate_share", "host paths every sandbox may write to", type="paths",
                  default=[])  # fmt: skip
    group.addoption(
        "--isolate-diff",
        action="store_true",
        default=None,
        help="list what each isolated test created, changed and deleted outside "
        "tmp_path and the shared paths (report section, junit property, summary)",
    )
    parser.addini("isolate_diff", "list what each isolated test changed (true/false)",
                  default="false")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "isolated(cpu=None, mem=None, pids=4096, timeout=None, hostname='isolated', "
        "net='private', cpu_period=None, cpuset=None, noise=0, clock_offset=0, seed=None): "
        "run this test in a throwaway Linux sandbox (namespaces, overlay snapshot, cgroup caps)",
    )
    try:
        settings = _settings(config)
    except SpecError as exc:
        raise pytest.UsageError(str(exc)) from None
    isolation = None if settings.disabled else assess(settings.cgroup_root)
    if isolation is not None and settings.strict and not isolation.complete:
        raise pytest.UsageError(strict_error(isolation, settings.strict_source))
    if isolation is not None and isolation.mode == "in-process":
        settings = replace(settings, disabled=True)
    if settings.isolate_all and not settings.disabled:
        _refuse_debugger(config)
    config.stash[STATE_KEY] = State(settings, Stats(), isolation)


def _refuse_debugger(config: pytest.Config) -> None:
    for option, name in (("usepdb", "--pdb"), ("trace", "--trace")):
        if config.getoption(option, False):
            raise pytest.UsageError(_DEBUGGER.format(option=name))


def _settings(config: pytest.Config) -> Settings:
    cli = {key: config.getoption(f"isolate_{key}") for key in SPEC_KEYS}
    ini = {key: config.getini(f"isolate_{key}") for key in SPEC_KEYS}
    isolate_all = config.getoption("isolate_all")
    check_contradictions(isolate_all, bool(config.getoption("no_isolate")), cli)
    cpus = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()
    defaults = resolve_defaults(cli, ini, cpus)
    if isolate_all is None:
        isolate_all = parse_bool(config.getini("isolate_all"), "ini option isolate_all")
    shares = parse_shares(
        config.getoption("isolate_share") or [],
        "command line option --isolate-share",
        str(config.invocation_params.dir),
        os.path.exists,
    )
    shares += parse_shares(
        [str(p) for p in config.getini("isolate_share")],
        "ini option isolate_share",
        str(config.rootpath),
        os.path.exists,
    )
    strict, strict_source = resolve_strict(
        config.getoption("isolate_strict"), config.getini("isolate_strict")
    )
    cgroup_root = resolve_cgroup_root(
        config.getoption("isolate_cgroup_root"), config.getini("isolate_cgroup_root")
    )
    diff = config.getoption("isolate_diff")
    if diff is None:
        diff = parse_bool(config.getini("isolate_diff"), "ini option isolate_diff")
    return Settings(
        isolate_all=bool(isolate_all),
        diff=bool(diff),
        disabled=bool(config.getoption("no_isolate")),
        defaults=defaults,
        strict=strict,
        strict_source=strict_source,
        cgroup_root=cgroup_root,
        shares=shares,
        cpus=cpus,
    )


def _decision(item: pytest.Item) -> IsolationSpec | str | None:
    if DECISION_KEY not in item.stash:
        markers = [(m.args, m.kwargs) for m in item.iter_markers(MARKER)]
        settings = item.config.stash[STATE_KEY].settings
        item.stash[DECISION_KEY] = decide(markers, settings, item.nodeid)
    return item.stash[DECISION_KEY]


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash[STATE_KEY]
    settings = state.settings
    if state.isolation is None:
        return ["isolate: off (--no-isolate)"]
    d = settings.defaults
    scope = "all tests" if settings.isolate_all else "tests marked @pytest.mark.isolated"
    if state.isolation.mode == "in-process":
        scope = "off"
    line = f"isolate: {scope}; defaults cpu={d.cpu} mem={d.mem} pids={d.pids} timeout={d.timeout}"
    for key in ("cpu_period", "cpuset", "noise", "clock_offset", "seed"):  # only when set
        if getattr(d, key) != getattr(BUILTIN_DEFAULTS, key):
            line += f" {key}={getattr(d, key)}"
    return [line, header_line(state.isolation)]


def _asks_for_isolation(item: pytest.Item) -> bool:
    settings = item.config.stash[STATE_KEY].settings
    return settings.isolate_all or item.get_closest_marker(MARKER) is not None


def _missing(item: pytest.Item) -> tuple[str, ...]:
    """The parts of the isolation this test asks for that the host cannot give."""
    isolation = item.config.stash[STATE_KEY].isolation
    if isolation is None or isolation.complete or not _asks_for_isolation(item):
        return ()
    decision = _decision(item)
    if not isinstance(decision, IsolationSpec):
        return isolation.missing_for(True)
    caps = {"cpu": decision.cpu, "mem": decision.mem, "pids": decision.pids}
    return isolation.missing_for([key for key, value in caps.items() if value is not None])


def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash[STATE_KEY]
    if state.isolation is None:
        return
    asked: set[str] = set()
    for item in session.items:
        asked.update(_missing(item))
    if asked:  # once per session, naming every missing part a test asks for
        warnings.warn(
            pytest.PytestWarning(warning_text(state.isolation, tuple(sorted(asked)))),
            stacklevel=1,
        )
    unlisted = changes.unavailable(state.isolation) if state.settings.diff else None
    if unlisted:
        warnings.warn(pytest.PytestWarning(unlisted), stacklevel=1)
    if state.isolation.mode == "in-process":
        return
    isolated = [item for item in session.items if isinstance(_decision(item), IsolationSpec)]
    if isolated:
        _refuse_debugger(session.config)
    gaps = reruns.rerun_gaps(session.config, isolated)
    if gaps:
        warnings.warn(
            pytest.PytestWarning(
                f"pytest-isolate: not applied to isolated tests yet (pytest-rerunfailures): "
                f"{'; '.join(gaps)}. Run those tests without isolation to use them."
            ),
            stacklevel=1,
        )
    if state.isolation.mode != "sandbox":
        return
    if state.session is None and isolated:
        paths = shares.session_shares(session.config, isolated, state.settings.shares)
        state.session = Session.start(_plan(state), paths)


def _plan(state: State) -> BuildPlan:
    assert state.isolation is not None
    return replace(state.isolation.plan, diff=state.settings.diff)


def _runner(item: pytest.Item, state: State) -> lifecycle.Runner:
    """In a sandbox (the session's builder starts with the first isolated test), or, where
    the host allows no sandbox, in a forked child only."""
    assert state.isolation is not None
    if state.isolation.mode == "fork":
        return run_forked
    if state.session is None:
        paths = shares.session_shares(item.config, [item], state.settings.shares)
        state.session = Session.start(_plan(state), paths)
    session = state.session

    def run(item: pytest.Item, nextitem: pytest.Item | None, spec: IsolationSpec) -> Outcome:
        after = _decision(nextitem) if nextitem is not None else None
        return run_isolated(item, nextitem, spec, session, prefork.upcoming(item, nextitem, after))

    return run


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    state = item.config.stash[STATE_KEY]
    decision = _decision(item)
    if decision is None:
        if state.session is not None:
            # Every earlier sandbox is gone (killed, reaped, cgroups removed) before a test
            # that can see the host runs; an isolated test cannot see them anyway.
            state.session.settle()
        return None
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    exit_request = None
    if isinstance(decision, str):
        missing = _missing(item)
        for report in error_reports(item, decision):
            if missing:
                report.user_properties.append((PROPERTY, ", ".join(missing)))
            ihook.pytest_runtest_logreport(report=report)
        teardown_to(item, nextitem)
    else:
        assert state.isolation is not None
        exit_request = lifecycle.protocol(
            item, nextitem, decision, _runner(item, state), state.stats, _missing(item)
        )
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    if exit_request is not None:
        pytest.exit(exit_request["msg"], exit_request["returncode"])
    return True


# -- inside the test process only (the channel is set after the fork) -------------------------
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    state = item.config.stash[STATE_KEY]
    if state.isolation is not None and state.isolation.mode == "in-process":
        missing = _missing(item)
        if missing:
            report.user_properties.append((PROPERTY, ", ".join(missing)))
    channel = current_channel()
    if channel is not None:
        integrations.annotate_report(item, report)
        data = item.config.hook.pytest_report_to_serializable(config=item.config, report=report)
        channel.send(wire.Kind.REPORT, data)
    return report


def pytest_warning_recorded(
    warning_message: warnings.WarningMessage, when: str, nodeid: str, location: Any
) -> None:
    # Only warnings of the test being run in this (child) process are forwarded.
    if when != "runtest" or not nodeid:
        return
    channel = current_channel()
    if channel is not None:
        channel.send(wire.Kind.WARNING, serialize_warning(warning_message))


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    # pytest-timeout's timer belongs in the test process, around the test (ours is outside).
    if current_channel() is None and isinstance(_decision(item), IsolationSpec):
        return timeout.defer_timeout(item, settings)
    return None


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    try:
        return (yield)
    finally:  # before pytest-cov (an outer wrapper) combines its data
        coverage.collect(session.config)
        coverage.cleanup(session.config)  # xdist workers never reach unconfigure


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE_KEY, None)
    if state is not None and state.session is not None:
        state.session.end()  # every sandbox is gone before other plugins look


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        return
    lines = state.stats.summary_lines()
    if lines:
        terminalreporter.write_sep("-", "isolation")
        for line in lines:
            terminalreporter.write_line(line)
    if state.settings.diff and state.isolation is not None:
        reports = [r for group in terminalreporter.stats.values() for r in group]
        changes.write_summary(terminalreporter, changes.summary(reports))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None and state.session is not None:
        state.session.close()
        state.session = None
    leave_delegated()  # the probe may have moved pytest into a leaf of a delegated cgroup
    coverage.cleanup(config)
