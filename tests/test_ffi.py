"""The bindings load without the C parser, and the generated declarations are current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest_isolate
from pytest_isolate.ffi import build as ffi_build


def test_generated_declarations_are_current(tmp_path: Path) -> None:
    fresh = tmp_path / "_ffi_abi.py"
    ffi_build.generate(str(fresh))
    committed = Path(pytest_isolate.__file__).parent / "ffi" / "_abi.py"
    assert committed.read_text() == fresh.read_text(), "run: python -m pytest_isolate.ffi.build"


def test_bindings_do_not_load_the_c_parser() -> None:
    code = (
        "import sys, pytest_isolate.ffi as f; "
        "assert not [m for m in sys.modules if m.startswith('pycparser')], 'pycparser loaded'; "
        "assert f.prctl(f.PR_SET_DUMPABLE, 1) == 0"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
