"""When the next test's process may be forked while the current test runs (prefork.py).

Collected in this process (no test runs); the end-to-end behaviour is in
test_acceptance_prefork.py.
"""

from __future__ import annotations

import pytest

from pytest_isolate import _compat
from pytest_isolate.controller import prefork
from pytest_isolate.spec import IsolationSpec

SPEC = IsolationSpec(mem=64 << 20)

SUITE = """
import pytest

@pytest.fixture(scope="class")
def per_class():
    return 1

def test_a(): pass
def test_b(): pass

@pytest.mark.filterwarnings("ignore::UserWarning")
def test_c(): pass

class TestK:
    def test_d(self, per_class): pass
"""


def _items(pytester: pytest.Pytester, **files: str) -> list[pytest.Item]:
    """The items, with the first one's module set up (as in pytest's process, before it runs)."""
    pytester.makepyfile(**files)
    items, _ = pytester.inline_genitems("-p", "no:isolate", "-p", "no:randomly")
    _compat.setup_shared(items[0])
    return items


def test_the_next_test_of_the_same_file_may_be_forked_early(pytester: pytest.Pytester) -> None:
    a, b, c, d = _items(pytester, test_m=SUITE)
    assert prefork.upcoming(a, b, SPEC) is SPEC
    assert prefork.upcoming(a, None, SPEC) is None  # the last test
    assert prefork.upcoming(a, b, None) is None  # not isolated
    assert prefork.upcoming(a, b, "the marker's error") is None
    assert prefork.upcoming(b, c, SPEC) is None  # other filterwarnings marks
    # TestK's class fixture would be set up in pytest's process first.
    assert prefork.upcoming(c, d, SPEC) is None


def test_into_the_next_file_of_the_same_directory(pytester: pytest.Pytester) -> None:
    a, b = _items(pytester, test_1="def test_a(): pass", test_2="def test_b(): pass")
    # Moving on to test_2.py is pytest's bookkeeping only: nothing of the user's runs.
    assert _compat.teardown_is_bookkeeping(a, b)
    assert _compat.setup_is_bookkeeping(b)
    assert prefork.upcoming(a, b, SPEC) is SPEC


def test_not_into_another_directory(pytester: pytest.Pytester) -> None:
    pytester.mkpydir("zz")  # collected after test_1.py
    a, b = _items(pytester, test_1="def test_a(): pass", **{"zz/test_2": "def test_b(): pass"})
    assert prefork.upcoming(a, b, SPEC) is None  # other conftests may apply there


def test_not_past_a_module_fixture_to_tear_down(pytester: pytest.Pytester) -> None:
    a, b = _items(
        pytester,
        test_1="""
        import pytest

        @pytest.fixture(scope="module")
        def per_module():
            yield 1

        def test_a(per_module): pass
        """,
        test_2="def test_b(): pass",
    )
    _compat.setup_shared(a)  # per_module is set up, with a finalizer on test_1.py
    assert not _compat.teardown_is_bookkeeping(a, b)
    assert prefork.upcoming(a, b, SPEC) is None


def test_not_into_a_file_with_setup_module(pytester: pytest.Pytester) -> None:
    a, b = _items(
        pytester,
        test_1="def test_a(): pass",
        test_2="def setup_module(): pass\n\ndef test_b(): pass",
    )
    assert _compat.teardown_is_bookkeeping(a, b)
    assert not _compat.setup_is_bookkeeping(b)  # its xunit fixture runs the user's code
    assert prefork.upcoming(a, b, SPEC) is None


def test_a_session_fixture_already_set_up_is_only_bookkeeping(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "import pytest\n\n@pytest.fixture(scope='session')\ndef shared():\n    return 1\n"
    )
    a, b = _items(pytester, test_1="def test_a(shared): pass", test_2="def test_b(shared): pass")
    _compat.setup_shared(a)  # shared, session-scoped, is cached now
    assert _compat.setup_is_bookkeeping(b)
    assert prefork.upcoming(a, b, SPEC) is SPEC


def test_not_with_a_hook_that_runs_in_pytests_process_before_each_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest("def pytest_runtest_logstart(nodeid, location): pass")
    a, b, _, _ = _items(pytester, test_m=SUITE)
    assert not prefork.hooks_safe(a.config)
    assert prefork.upcoming(a, b, SPEC) is None


def test_pytests_own_hooks_are_known(pytester: pytest.Pytester) -> None:
    a, *_ = _items(pytester, test_m=SUITE)
    assert prefork.hooks_safe(a.config)


def test_items_are_named_by_their_index_in_the_session(pytester: pytest.Pytester) -> None:
    items = _items(pytester, test_m=SUITE)
    assert [prefork.item_index(item) for item in items] == [0, 1, 2, 3]
    items[0].session.items.remove(items[1])
    assert prefork.item_index(items[1]) == -1  # not there: told by position, it cannot be
