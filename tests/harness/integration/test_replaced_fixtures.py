"""A project's own fixtures named like the harness's (an old conftest's `engine`, an adapter's
`client`) replace them silently for the tests that get them: the run says so once per fixture,
with where it is defined and the fix, as a warning (a team may override one on purpose). A
fixture that extends the harness's, one of another name, and the unguarded tests' are left
alone. Collected in a nested run, never run."""

from __future__ import annotations

import subprocess

import pytest
import pytest_asyncio
from realstack.config import HarnessConfig
from realstack.stamps import RunNames

from tests.harness.helpers import names_for
from tests.harness.nested import run_nested_pytest
from tests.harness.probe_project import ADAPTER, build_probe_project

PROBE = "replaced_fixtures_probe.py"
ENGINE = "async def engine():  # an old conftest's async engine, on a database of its own"
CLIENT = "def client(app):  # the adapter's own client, named like the harness's"

OLD_CONFTEST = f"""
import pytest


@pytest.fixture(scope="session")
{ENGINE}
    return "postgresql+asyncpg://localhost/bookmarks_test"


@pytest.fixture
def app(app):  # extends the harness's app
    return app
"""

ADAPTER_WITH_CLIENTS = f"""\
import pytest
from {ADAPTER} import create_app, metadata, session_dependency, session_dependency_yields


@pytest.fixture
{CLIENT}
    return None


@pytest.fixture
def alice(app):  # a client of the adapter's own name
    return None
"""

UNGUARDED_CONFTEST = """
import pytest


@pytest.fixture
def db_session():  # an unguarded test's own
    return None
"""


def line_of(source: str, definition: str) -> int:
    """The line of the decorator above `definition` in `source` (where Python says a decorated
    function starts)."""
    return source.splitlines().index(definition)  # 0-based index of `def`: 1-based, the line above


@pytest_asyncio.fixture(scope="module")
async def collected(
    harness_config: HarnessConfig, run_names: RunNames, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], int, int]:
    """The probe collected (a guarded path and an unguarded one) in a project whose root
    conftest and adapter define fixtures named like the harness's; the lines of `engine` and of
    the adapter's `client`."""
    root = tmp_path_factory.mktemp("replaced")
    project = build_probe_project(root, PROBE, ADAPTER_WITH_CLIENTS)
    conftest = (root / "conftest.py").read_text() + OLD_CONFTEST
    (root / "conftest.py").write_text(conftest)
    (root / "other").mkdir()
    (root / "other" / "conftest.py").write_text(UNGUARDED_CONFTEST)
    (root / "other" / "test_unguarded.py").write_text("def test_x(db_session): ...\n")
    result = await run_nested_pytest(
        harness_config,
        ["--collect-only", f"checks/{PROBE}", "other"],
        run_id=names_for(run_names, "replaced").run_id,
        project=project,
    )
    return (
        result,
        line_of(conftest, ENGINE),
        line_of(ADAPTER_WITH_CLIENTS, CLIENT),
    )


def test_a_conftests_engine_is_named_with_where_it_is_and_the_fix(
    collected: tuple[subprocess.CompletedProcess[str], int, int],
) -> None:
    result, engine_line, _ = collected
    output = result.stdout + result.stderr

    assert result.returncode == 0, output  # a warning, not a refusal
    assert (
        f"the fixture 'engine' defined at conftest.py:{engine_line} replaces the harness's own "
        f"engine in guarded tests (e.g. checks/{PROBE}::test_asks_for_the_engine)" in output
    ), output
    assert "fix: delete it, or rename it if you meant a fixture of your own" in output
    assert "the harness's engine gives the run's engine: its own database" in output


def test_an_adapters_client_is_named_too(
    collected: tuple[subprocess.CompletedProcess[str], int, int],
) -> None:
    result, _, client_line = collected
    output = result.stdout + result.stderr

    assert (
        f"the fixture 'client' defined at probe_adapter.py:{client_line} replaces the harness's "
        "own client" in output
    ), output
    assert "the harness's client gives an anonymous client of the app under test" in output


def test_each_is_said_once_and_nothing_else_is(
    collected: tuple[subprocess.CompletedProcess[str], int, int],
) -> None:
    result, _, _ = collected
    output = result.stdout + result.stderr

    # Two tests get the conftest's engine: one warning names the first (a warning per test
    # would name each, and show apart), one names the client's.
    assert output.count("ReplacedFixtureWarning: ") == 2, output
    assert "(e.g. checks/replaced_fixtures_probe.py::test_asks_for_the_engine_too)" not in output
    for left_alone in ("'app'", "'alice'", "'db_session'"):  # extends; own name; unguarded
        assert f"the fixture {left_alone}" not in output
