from __future__ import annotations

import pytest

from conftest import RunPytest, needs_root


@needs_root
def test_isolated_marker_runs_in_sandbox(pytester: pytest.Pytester, run: RunPytest) -> None:
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.isolated
        def test_pid():
            assert os.getpid() == 2
        """
    )
    result = run()
    result.assert_outcomes(passed=1)
