"""A new Postgres-only project, "notes", as a team would write it to adopt the harness: the
sample app as its package, a [tool.harness] table, an adapter, a conftest line and a few
tests. Either the harness is installed (nothing of it in the project), or its folder is copied
in, unchanged, under the same import name.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE = REPO_ROOT / "pytest-realstack" / "src" / "realstack"
TOXFILE = REPO_ROOT / "toxfile.py"
SAMPLE = Path(__file__).resolve().parent / "sample"
APP_DATABASE_URL = "SAMPLE_DATABASE_URL"

PYPROJECT = """\
[project]
name = "notes"
version = "0.1.0"
requires-python = ">=3.11"

[tool.harness]
name = "notes"
services = ["postgres"]
guarded_paths = ["tests/integration"]
adapter = "tests.adapter"
alembic_config = "notes/alembic.ini"
app_database_url_variable = "SAMPLE_DATABASE_URL"
drift_check = true

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
addopts = [
    "--strict-markers", "-p", "no:cacheprovider", "-p", "no:schemathesis",
    "-p", "no:pytest_postgresql", "-p", "no:anyio", "-p", "no:hypothesispytest",{extra_addopts}
]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
"""

CONFTEST = 'pytest_plugins = ["realstack.plugin"]\n'

ADAPTER = '''\
"""What the test harness (pytest-realstack) knows of the notes app."""

from __future__ import annotations

from fastapi import FastAPI
from realstack import RunTargets

from notes import Settings
from notes import create_app as create_notes_app
from notes.db import get_session
from notes.models import Base

metadata = Base.metadata
session_dependency = get_session


def create_app(run: RunTargets) -> FastAPI:
    return create_notes_app(Settings.from_targets(run))


def app_environment(run: RunTargets) -> dict[str, str]:
    return Settings.from_targets(run).environment()
'''

TESTS = """\
import json
import sys

import pytest
from sqlalchemy import func, select, text

from notes.models import Note

STAMP = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :d"
TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"


def test_the_guard_passed_a_postgres_only_run(harness_config, request):
    assert harness_config.project.name == "notes"
    assert harness_config.database_url.startswith("postgresql+asyncpg://")
    assert harness_config.s3 is None
    with pytest.raises(pytest.FixtureLookupError):
        request.getfixturevalue("s3_bucket")


async def test_the_run_has_one_stamped_and_migrated_database(db_session, run_names):
    database = await db_session.scalar(text("SELECT current_database()"))
    stamp = json.loads(await db_session.scalar(text(STAMP), {"d": database}))
    tables = set((await db_session.execute(text(TABLES))).scalars())
    stamps = (await db_session.execute(text(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname LIKE 'test%'"))).scalars()
    ours = [s for s in map(json.loads, filter(None, stamps))
            if (s.get("run"), s.get("worker")) == (run_names.run_id, run_names.worker)]

    assert database == run_names.database
    assert (stamp["created_by"], stamp["run"]) == ("notes-test-harness", run_names.run_id)
    assert tables == {"notes", "alembic_version"}
    assert len(ours) == 1


async def test_a_note_posted_through_the_app_is_in_the_tests_transaction(client, db_session):
    created = await client.post("/notes", json={"title": "adopted"})

    assert created.status_code == 201
    assert await db_session.scalar(select(func.count()).select_from(Note)) == 1
    assert (await client.get(f"/notes/{created.json()['id']}")).json()["title"] == "adopted"


async def test_and_is_gone_in_the_next_test(client, db_session):
    assert await db_session.scalar(select(func.count()).select_from(Note)) == 0
    assert (await client.get("/notes")).json() == []


def test_no_s3_and_the_plugin_loaded_once_from_where_expected(pytestconfig):
    import realstack.plugin

    assert "boto3" not in sys.modules
    assert "botocore" not in sys.modules
    assert pytestconfig.pluginmanager.get_plugin("realstack.plugin") is realstack.plugin
    registered = [p for p in pytestconfig.pluginmanager.get_plugins()
                  if getattr(p, "__name__", "") == "realstack.plugin"]
    assert registered == [realstack.plugin]
    print("PLUGIN_FILE", realstack.plugin.__file__)
"""

# A conftest of the guarded path that reads the app's URL at import, as a real app's did: it
# must see the run's test database, never the developer's, or the run must not start.
EARLY_CONFTEST = """\
import os

import pytest

SEEN_AT_IMPORT = os.environ.get("SAMPLE_DATABASE_URL")


@pytest.fixture
def url_seen_at_import():
    return SEEN_AT_IMPORT
"""

EARLY_TEST = """\
def test_the_conftest_read_the_test_database_at_import(url_seen_at_import, harness_config):
    assert url_seen_at_import == harness_config.database_url
"""


def build_project(
    root: Path, *, copy_core: bool, early_conftest: bool = False, extra_addopts: str = ""
) -> Path:
    """The project in `root`; with `copy_core`, the harness's folder copied in as `realstack/`
    and the toxfile beside it, unchanged."""
    if copy_core:
        shutil.copytree(
            CORE, root / "realstack", ignore=shutil.ignore_patterns("__pycache__", ".*")
        )
        shutil.copy2(TOXFILE, root / "toxfile.py")
    shutil.copytree(
        SAMPLE, root / "notes", ignore=shutil.ignore_patterns("__pycache__", "adapter.py")
    )
    files = {
        "pyproject.toml": PYPROJECT.format(extra_addopts=extra_addopts),
        "tests/__init__.py": "",
        "tests/conftest.py": CONFTEST,
        "tests/adapter.py": ADAPTER,
        "tests/integration/__init__.py": "",
        "tests/integration/test_notes.py": TESTS,
    }
    if early_conftest:
        files |= {
            "tests/integration/conftest.py": EARLY_CONFTEST,
            "tests/integration/test_early.py": EARLY_TEST,
        }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def plugin_file(stdout: str) -> Path:
    """Where the run's `realstack.plugin` came from (printed by the last test, with -s)."""
    lines = [line for line in stdout.splitlines() if "PLUGIN_FILE" in line]
    assert lines, stdout
    return Path(lines[-1].split("PLUGIN_FILE", 1)[1].strip())
