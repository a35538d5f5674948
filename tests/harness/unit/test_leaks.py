"""What a test that committed behind its transaction is told: both likely causes, each with its
fix (the nested runs of integration/test_newcomer_pitfalls.py show it at a test's teardown)."""

from __future__ import annotations

from realstack.leaks import foreign_commits_message


def test_rows_committed_behind_the_test_name_real_commits_and_the_session_dependency() -> None:
    message = foreign_commits_message("checks/test_x.py::test_y", {"bookmarks": (0, 1)})

    assert "checks/test_x.py::test_y committed rows through a connection of its own" in message
    assert "bookmarks (0 -> 1 rows)" in message
    assert "fix: mark the test @pytest.mark.real_commits" in message
    assert "the adapter's session_dependency is then not the dependency the app's routes" in message
    assert "fix: set session_dependency in the adapter to the dependency the routes use" in message
