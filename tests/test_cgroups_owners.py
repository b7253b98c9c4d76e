"""Unit tests for ``pytest_isolate.cgroups.owners``: owner tokens and their staleness, on
a fake /proc and on this process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import write_stat
from pytest_isolate.cgroups.owners import owner_token, token_is_stale


def test_owner_token_fake_proc(tmp_path: Path) -> None:
    write_stat(tmp_path, 123, 987654)
    assert owner_token(123, proc=str(tmp_path)) == "123.987654"


def test_owner_token_comm_with_spaces_and_parens(tmp_path: Path) -> None:
    write_stat(tmp_path, 77, 4242, comm="a) b (c) 9 9 9")
    assert owner_token(77, proc=str(tmp_path)) == "77.4242"


def test_owner_token_real_self() -> None:
    token = owner_token()
    pid, start = token.split(".")
    assert pid == str(os.getpid())
    with open("/proc/self/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[19] == start
    assert owner_token(os.getpid()) == token


@pytest.mark.parametrize(
    ("name", "stale"),
    [
        ("123.987654.1", False),  # the owner is alive
        ("123.987654.0", False),
        ("123.987654.7.extra", False),
        ("123.111.1", True),  # pid reused by another process
        ("124.987654.1", True),  # the owner is gone
        ("123.987654", False),  # not PID.STARTTIME.N: not ours
        ("abc.1.2", False),
        ("notours", False),
        ("", False),
        ("-1.2.3", False),
    ],
)
def test_token_is_stale(tmp_path: Path, name: str, stale: bool) -> None:
    write_stat(tmp_path, 123, 987654)
    assert token_is_stale(name, proc=str(tmp_path)) is stale


@pytest.mark.parametrize(("state", "stale"), [("S", False), ("R", False), ("D", False),
                                              ("Z", True), ("X", True)])  # fmt: skip
def test_zombie_owner_is_stale(tmp_path: Path, state: str, stale: bool) -> None:
    # A zombie (or dead) owner no longer owns anything, even before its parent reaps it.
    write_stat(tmp_path, 321, 5555, state=state)
    assert token_is_stale("321.5555.1", proc=str(tmp_path)) is stale


def test_token_is_stale_real() -> None:
    assert token_is_stale(owner_token() + ".0") is False
    assert owner_token().split(".")[1] != "1"
    assert token_is_stale(f"{os.getpid()}.1.0") is True
