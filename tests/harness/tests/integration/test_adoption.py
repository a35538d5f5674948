"""The adoption proof: a new Postgres-only project takes the core by copying it, unchanged,
to a place of its own, writes an adapter and a [tool.harness] table, and its tests pass.

Run against this run's PostgreSQL only (no S3 variables at all); boto3 is never imported.
"""

from __future__ import annotations

import asyncio
import difflib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness.config import HarnessConfig
from tests.harness.project import load_project
from tests.harness.stamps import RunNames
from tests.harness.tests.helpers import names_for, run_leftovers
from tests.harness.tests.nested import REPO_ROOT, TIER_DIR, clean_environment, service_environment

CORE = REPO_ROOT / "tests" / "harness"
CORE_AT = Path("testing", "pgharness")  # not tests/harness: the core must not care where it is
COPIED = {"toxfile.py": REPO_ROOT / "toxfile.py", str(CORE_AT): CORE}
MAX_CHANGED_LINES = 5
MAX_ADAPTER_LINES = 60
TIMEOUT_S = 180

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
    "-p", "no:pytest_postgresql", "-p", "no:anyio", "-p", "no:hypothesispytest",
]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
"""

CONFTEST = 'pytest_plugins = ["testing.pgharness.plugin"]\n'

ADAPTER = '''\
"""What the test harness (testing/pgharness) knows of the notes app."""

from __future__ import annotations

from fastapi import FastAPI

from notes import Settings
from notes import create_app as create_notes_app
from notes.db import get_session
from notes.models import Base
from testing.pgharness.config import RunTargets

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
    ours = [s for s in stamps if s and json.loads(s).get("run") == run_names.run_id]

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


def test_no_s3_and_only_the_copied_core():
    assert "boto3" not in sys.modules
    assert "botocore" not in sys.modules
    assert "testing.pgharness.plugin" in sys.modules
    assert not [m for m in sys.modules if m.startswith("tests.harness")]
"""


def _not_copied(part: str) -> bool:
    """Caches (__pycache__, .mypy_cache, ...) are not part of the core."""
    return part == "__pycache__" or part.startswith(".") or part.endswith(".pyc")


def _ignore_in_core(folder: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if _not_copied(n)}
    if Path(folder) == CORE:
        skipped.add("tests")  # the harness's own tier is not part of the core
    return skipped


def build_project(root: Path) -> Path:
    """The project a new user would write: the copied core and toxfile, the app, the table,
    an adapter, a conftest line and a few tests."""
    shutil.copytree(CORE, root / CORE_AT, ignore=_ignore_in_core)
    (root / "testing" / "__init__.py").write_text("")
    shutil.copy2(REPO_ROOT / "toxfile.py", root / "toxfile.py")
    shutil.copytree(
        TIER_DIR / "sample",
        root / "notes",
        ignore=shutil.ignore_patterns("__pycache__", "adapter.py"),
    )
    files = {
        "pyproject.toml": PYPROJECT,
        "tests/__init__.py": "",
        "tests/conftest.py": CONFTEST,
        "tests/adapter.py": ADAPTER,
        "tests/integration/__init__.py": "",
        "tests/integration/test_notes.py": TESTS,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def changed_lines(root: Path) -> int:
    """Lines added or removed in the copies of the core and the toxfile, against the originals."""
    changed = 0
    for copy_name, original in COPIED.items():
        pairs = (
            [(root / copy_name, original)]
            if original.is_file()
            else [
                (root / copy_name / p.relative_to(original), p)
                for p in original.rglob("*")
                if p.is_file()
                and not any(map(_not_copied, p.relative_to(original).parts))
                and p.relative_to(original).parts[0] != "tests"
            ]
        )
        for copy, source in pairs:
            copied = copy.read_text().splitlines() if copy.is_file() else []
            diff = difflib.unified_diff(source.read_text().splitlines(), copied, lineterm="", n=0)
            changed += sum(
                1 for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))
            )
    return changed


def _run(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-v"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


async def test_a_postgres_only_project_adopts_the_core_by_copying_it(
    harness_config: HarnessConfig, admin: AsyncEngine, run_names: RunNames, tmp_path: Path
) -> None:
    root = build_project(tmp_path / "notes-service")
    notes = load_project(root / "pyproject.toml")
    child_run = names_for(run_names, "adopt").run_id
    env = clean_environment(harness_config.project, notes)
    env.pop("PYTHONPATH", None)
    env |= service_environment(harness_config, with_s3=False)
    env[notes.run_id_variable] = child_run

    result = await asyncio.to_thread(_run, root, env)
    changed = changed_lines(root)
    adapter_lines = len((root / "tests" / "adapter.py").read_text().splitlines())

    assert not any(k.startswith(("MINIO_", "TEST_S3_", "S3_")) for k in env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
    assert changed == 0, f"{changed} changed lines in the copied core (at most {MAX_CHANGED_LINES})"
    assert adapter_lines <= MAX_ADAPTER_LINES
    assert await run_leftovers(admin, child_run) == []


def test_the_adopted_projects_guard_stops_a_wrong_url_before_collection(
    harness_config: HarnessConfig, tmp_path: Path
) -> None:
    root = build_project(tmp_path / "notes-service")
    notes = load_project(root / "pyproject.toml")
    env = clean_environment(harness_config.project, notes)
    env.pop("PYTHONPATH", None)
    env["TEST_DATABASE_URL"] = "sqlite:///x.db"

    result = _run(root, env)
    message = result.stdout + result.stderr

    assert result.returncode == 4, message
    assert "Integration tests require postgresql+asyncpg:// (the scheme is 'sqlite')" in message
    assert "TEST_DATABASE_URL='sqlite:///x.db'" in message
    assert "S3" not in message
    assert "collected" not in result.stdout
    assert not (root / "x.db").exists()
