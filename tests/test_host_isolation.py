"""The session's isolation decided from the probe's checks: pure, with faked hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_isolate.builder.plan import BuildPlan
from pytest_isolate.host import isolation, probe
from pytest_isolate.host.checks import (
    APPARMOR_SYSCTL,
    CGROUPS,
    MAX_USERNS_SYSCTL,
    NAMESPACES,
    OVERLAY,
    PROC,
    USERNS,
    Check,
)
from pytest_isolate.host.isolation import (
    Isolation,
    decide_isolation,
    header_line,
    strict_error,
    warning_text,
)

CGROUP_OK = Check(CGROUPS, True, "cgroup v1: cpu, cpuacct, memory, pids")
EPERM = "[Errno 1] Operation not permitted"


def checks(*failing: str, cgroup: Check = CGROUP_OK) -> dict[str, Check]:
    out = {name: Check(name, name not in failing, EPERM if name in failing else "")
           for name in (USERNS, NAMESPACES, OVERLAY, PROC)}  # fmt: skip
    out[CGROUPS] = cgroup if CGROUPS not in failing else Check(CGROUPS, False, "read-only")
    return out


def test_everything_as_root() -> None:
    iso = decide_isolation("linux", True, checks())
    assert iso.complete and iso.mode == "sandbox"
    assert iso.plan == BuildPlan(userns="last")
    assert header_line(iso) == (
        "isolation: pid net mnt uts ipc user namespaces, overlay snapshot, "
        "cgroup v1 (cpu cpuacct memory pids)"
    )


def test_everything_rootless() -> None:
    iso = decide_isolation("linux", False, checks(), cgroup_root="/pytest-isolate/me")
    assert iso.complete
    assert iso.plan == BuildPlan(userns="first", cgroup_root="/pytest-isolate/me")
    assert header_line(iso) == (
        "isolation: rootless, pid net mnt uts ipc user namespaces, overlay snapshot per "
        "top-level directory, cgroup v1 (cpu cpuacct memory pids)"
    )


def test_no_userns_as_root_keeps_the_other_namespaces() -> None:
    iso = decide_isolation("linux", True, checks(USERNS))
    assert iso.mode == "sandbox"
    assert iso.plan.userns == "" and iso.plan.overlay and iso.plan.cgroups
    assert [m.part for m in iso.missing] == [USERNS]
    assert "(no user namespace)" in header_line(iso)


@pytest.mark.parametrize(
    ("sysctls", "why", "fix"),
    [
        (
            {APPARMOR_SYSCTL: "1"},
            "Ubuntu's AppArmor restriction is on (kernel.apparmor_restrict_unprivileged_userns=1)",
            "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile",
        ),
        (
            {APPARMOR_SYSCTL: "0", MAX_USERNS_SYSCTL: "0"},
            "user namespaces are disabled (user.max_user_namespaces=0)",
            "sudo sysctl -w user.max_user_namespaces=15000",
        ),
        ({}, "a seccomp filter", "--security-opt seccomp=unconfined"),
    ],
)
def test_rootless_without_userns_is_fork_only_and_names_the_cause(
    sysctls: dict[str, str | None], why: str, fix: str
) -> None:
    iso = decide_isolation("linux", False, checks(USERNS), sysctls)
    assert iso.mode == "fork"
    assert [m.part for m in iso.missing] == [USERNS, NAMESPACES, OVERLAY, CGROUPS]
    text = warning_text(iso, iso.missing_for(True))
    assert text.startswith("pytest-isolate: isolated tests run fork-only, without user namespace")
    assert why in text and fix in text
    assert "\n" not in text
    assert header_line(iso).startswith("isolation: fork only")


def test_apparmor_detected_from_a_fake_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe reads the sysctl files; here they are files of our own."""
    fake = tmp_path / "apparmor_restrict_unprivileged_userns"
    fake.write_text("1\n")
    monkeypatch.setattr(probe, "APPARMOR_SYSCTL", str(fake))
    monkeypatch.setattr(probe, "MAX_USERNS_SYSCTL", str(tmp_path / "absent"))
    found = probe.sysctls()
    assert found == {str(fake): "1", str(tmp_path / "absent"): None}
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in probe._userns_fix()
    # decide_isolation looks the values up under the real paths
    real = {APPARMOR_SYSCTL: found[str(fake)]}
    iso = decide_isolation("linux", False, checks(USERNS), real)
    assert "AppArmor" in iso.missing[0].why


def test_unshare_blocked_as_root_is_fork_only() -> None:
    iso = decide_isolation("linux", True, checks(USERNS, NAMESPACES))
    assert iso.mode == "fork"
    assert iso.missing_for(False) == (USERNS, NAMESPACES, OVERLAY)
    assert iso.missing_for(True)[-1] == CGROUPS


def test_no_overlay_in_a_user_namespace_before_linux_5_11() -> None:
    overlay_fails = checks()
    overlay_fails[OVERLAY] = Check(OVERLAY, False, "[Errno 22] Invalid argument")
    iso = decide_isolation("linux", False, overlay_fails)
    assert iso.mode == "sandbox" and not iso.plan.overlay and iso.plan.userns == "first"
    (missing,) = iso.missing
    assert missing.part == OVERLAY
    assert "writes reach the host filesystem" in missing.why
    assert "Linux 5.11 or later" in missing.fix
    assert "no overlay snapshot" in header_line(iso)


def test_fresh_proc_refused_shows_the_hosts() -> None:
    iso = decide_isolation("linux", False, checks(PROC))
    assert not iso.plan.fresh_proc and iso.plan.overlay
    assert [m.part for m in iso.missing] == [PROC]
    assert ", host /proc, " in header_line(iso)


def test_no_cgroups_rootless_names_delegation() -> None:
    iso = decide_isolation("linux", False, checks(CGROUPS))
    assert not iso.plan.cgroups
    assert "--isolate-cgroup-root" in iso.missing[0].fix
    assert header_line(iso).endswith(", no cgroup caps")
    assert iso.missing_for(False) == ()  # a test without caps misses nothing


def test_macos_is_fork_only_with_one_warning() -> None:
    iso = decide_isolation("darwin", False, {})
    assert iso.mode == "fork"
    assert header_line(iso).startswith("isolation: fork only")
    text = warning_text(iso, iso.missing_for(True))
    assert text.startswith("pytest-isolate: isolated tests run fork-only, without ")
    assert text.count("fix: ") == 1 and "macOS" in text


def test_windows_runs_in_process_with_one_warning() -> None:
    iso = decide_isolation("win32", False, {})
    assert iso.mode == "in-process"
    assert header_line(iso) == "isolation: none, isolated tests run in-process (win32)"
    text = warning_text(iso, iso.missing_for(True))
    assert text.startswith("pytest-isolate: isolated tests run in-process, without process")


def test_strict_error_names_its_source_and_every_part() -> None:
    iso = decide_isolation("linux", True, checks(USERNS, CGROUPS))
    text = strict_error(iso, "ini option isolate_strict")
    assert text.startswith("ini option isolate_strict: this host cannot give full isolation")
    assert "user namespace (" in text and "cgroup caps (" in text


def test_build_plan_round_trips_through_json() -> None:
    plan = BuildPlan(userns="first", overlay=False, fresh_proc=False, cgroups=False,
                     cgroup_root="/x")  # fmt: skip
    assert BuildPlan.from_json(plan.to_json()) == plan
    with pytest.raises(ValueError, match="bad userns"):
        BuildPlan.from_json({"userns": "sideways"})


def test_only_a_rooted_snapshot_is_built_outside_its_init() -> None:
    assert not BuildPlan().init_builds  # as root: the builder, and the test mounts /proc
    assert not BuildPlan(userns="").init_builds
    assert BuildPlan(userns="first").init_builds  # rootless
    assert BuildPlan(overlay=False).init_builds  # no snapshot


def test_isolation_is_frozen() -> None:
    iso = Isolation("linux", "sandbox")
    with pytest.raises(AttributeError):
        iso.mode = "fork"  # type: ignore[misc]
    assert isolation.PROPERTY == "isolate_missing"


PARTIAL = Check(CGROUPS, False, "cgroup v2: memory, pids; controllers missing: cpu", "delegate cpu")


@pytest.mark.parametrize("root", [True, False])
def test_missing_controllers_keep_the_other_caps(root: bool) -> None:
    """A delegated scope whose parent does not pass cpu on: memory and pids caps still apply;
    only a test with a cpu cap misses something, and the fix is the probe's."""
    iso = decide_isolation("linux", root, checks(cgroup=PARTIAL))
    assert iso.plan.cgroups and not iso.complete
    assert (iso.cgroup_version, iso.controllers) == (2, ("memory", "pids"))
    assert header_line(iso).endswith(", cgroup v2 (memory pids)")
    (missing,) = iso.missing
    assert missing == isolation.Missing(
        "cpu cap", "the cgroup v2 cpu controller is not available here", "delegate cpu"
    )
    assert iso.missing_for(["mem", "pids"]) == ()
    assert iso.missing_for(["cpu"]) == ("cpu cap",)
    assert iso.missing_for(True) == ("cpu cap",) and iso.missing_for(False) == ()
    assert "missing cpu cap (the cgroup v2 cpu controller" in strict_error(iso, "x")
    text = warning_text(iso, iso.missing_for(True))
    assert text == (
        "pytest-isolate: isolated tests run without cpu cap (the cgroup v2 cpu controller is "
        "not available here); fix: delegate cpu"
    )


def test_no_cgroups_rootless_takes_the_probes_fix() -> None:
    fix = "start pytest as the only process of a cgroup delegated to you: systemd-run ..."
    iso = decide_isolation("linux", False, checks(cgroup=Check(CGROUPS, False, "none", fix)))
    assert not iso.plan.cgroups and iso.cgroup_version is None
    assert iso.missing[0].fix == fix
    iso = decide_isolation("linux", True, checks(cgroup=Check(CGROUPS, False, "none", fix)))
    assert iso.missing[0].fix.startswith("mount the cgroup v1")  # as root: as before


def test_cgroup_parts_count_only_for_tests_with_caps() -> None:
    iso = decide_isolation("linux", False, checks(CGROUPS))
    assert iso.missing_for(["pids"]) == (CGROUPS,)
    assert iso.missing_for([]) == ()
