"""pytest-isolate: run tests in throwaway Linux sandboxes.

Mark a test ``@pytest.mark.isolated(cpu=0.3, mem="128M")`` or run
``pytest --isolate-all``. See the README for what a sandbox holds.
"""

from __future__ import annotations

from .cgroups import Usage
from .spec import IsolationSpec, SpecError

__version__ = "0.1.0"
__all__ = ["IsolationSpec", "SpecError", "Usage", "__version__"]
