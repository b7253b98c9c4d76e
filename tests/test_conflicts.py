"""PyPI's pytest-isolate / pytest-isolated installed beside this plugin: refuse to start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import RunPytest


def _fake_distribution(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("pytest-isolate", "same import package (pytest_isolate)"),
        ("pytest-isolated", "same 'isolated' marker"),
    ],
)
def test_startup_fails_with_a_clear_message(
    pytester: pytest.Pytester,
    run: RunPytest,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    why: str,
) -> None:
    site = pytester.path / "site"
    _fake_distribution(site, name, "9.9.9")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile("def test_x(): pass\n")
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"*pytest-isolate-sandbox cannot run beside the PyPI package {name} 9.9.9: *{why}*"
            f"Uninstall one of them (pip uninstall {name})*"
        ]
    )
    assert "Traceback" not in result.stderr.str()


def test_no_conflict_starts_normally(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile("def test_x(): pass\n")
    run().assert_outcomes(passed=1)
