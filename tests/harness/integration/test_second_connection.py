"""What a second connection commits behind the test's transaction is caught after the test, not
leaked into the next one: committed DDL fails the test, names each change and stops the run
(later tests would run on a changed schema); committed rows, a count-neutral UPDATE among them,
fail it and are put back as the migrations left them (seeded rows and sequences included).

Each case is a nested run of the "notes" project (notes_project.py) with one seeding migration
added: a second connection commits the case's statements in its first test, and its second test
checks that it runs on the database as migrated.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from realstack.config import HarnessConfig
from realstack.project import load_project
from realstack.stamps import RunNames

from tests.harness.helpers import names_for
from tests.harness.nested import clean_environment, service_environment
from tests.harness.notes_project import build_project

TIMEOUT_S = 180
SEED = '''\
"""One seeded note, as a data migration would leave it."""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute("INSERT INTO notes (title, body) VALUES ('seeded', 'as migrated')")
'''
CASES = """\
import os

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

STATEMENTS = os.environ["SECOND_CONNECTION_SQL"].split(";")


async def test_a_second_connection_commits(run_database_url, db_session):
    other = create_async_engine(run_database_url)
    try:
        async with other.begin() as conn:
            for statement in STATEMENTS:
                await conn.execute(text(statement))
    finally:
        await other.dispose()


async def test_the_next_test_runs_on_the_database_as_migrated(db_session):
    await check_as_migrated(db_session)


@pytest.mark.real_commits
async def test_real_commits_change_the_seeded_rows(db_session):
    await db_session.execute(text("UPDATE notes SET title = 'committed'"))
    await db_session.execute(text("INSERT INTO notes (title, body) VALUES ('more', '')"))
    await db_session.commit()


async def test_after_real_commits_too(db_session):
    await check_as_migrated(db_session)


async def check_as_migrated(db_session):
    notes = (await db_session.execute(text("SELECT id, title, body FROM notes"))).all()
    columns = (await db_session.execute(text(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes' "
        "ORDER BY ordinal_position"))).scalars().all()
    tables = (await db_session.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
        "ORDER BY tablename"))).scalars().all()
    next_id = await db_session.scalar(text(
        "INSERT INTO notes (title, body) VALUES ('next', '') RETURNING id"))

    assert [tuple(n) for n in notes] == [(1, "seeded", "as migrated")]
    assert columns == ["id", "title", "body", "created_at"]
    assert tables == ["alembic_version", "notes"]
    assert next_id == 2
"""
DDL = {
    "create-table": (
        "CREATE TABLE extra (id int)",
        ["+ table public.extra", "+ column public.extra.id integer"],
    ),
    "add-column": (
        "ALTER TABLE notes ADD COLUMN extra integer",
        ["+ column public.notes.extra integer"],
    ),
    "create-function": (
        "CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42'",
        ["+ function public.answer(): "],
    ),
    "drop-index": ("DROP INDEX ix_notes_created_at", ["- index public.ix_notes_created_at: "]),
}
ROWS = {
    "update": ("UPDATE notes SET title = 'changed'", "notes (rows changed in place)"),
    "delete-and-insert": (
        "DELETE FROM notes;INSERT INTO notes (title, body) VALUES ('other', '')",
        "notes (rows changed in place)",
    ),
    "insert": ("INSERT INTO notes (title, body) VALUES ('leak', '')", "notes (1 -> 2 rows)"),
}


async def _nested_run(
    config: HarnessConfig, run_names: RunNames, root: Path, label: str, sql: str
) -> subprocess.CompletedProcess[str]:
    build_project(root, copy_core=False)
    (root / "notes" / "migrations" / "versions" / "0002_seed.py").write_text(SEED)
    (root / "tests" / "integration" / "test_notes.py").unlink()
    (root / "tests" / "integration" / "test_cases.py").write_text(textwrap.dedent(CASES))
    notes = load_project(root / "pyproject.toml")
    env = clean_environment(config.project, notes) | service_environment(config, with_s3=False)
    env.pop("PYTHONPATH", None)
    env |= {
        notes.run_id_variable: names_for(run_names, label).run_id,
        "SECOND_CONNECTION_SQL": sql,
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pytest", "-v", "-p", "no:randomly", "tests/integration"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


@pytest.mark.parametrize("case", list(DDL))
async def test_committed_ddl_fails_the_test_names_the_change_and_stops_the_run(
    harness_config: HarnessConfig, run_names: RunNames, tmp_path: Path, case: str
) -> None:
    sql, changes = DDL[case]

    result = await _nested_run(harness_config, run_names, tmp_path / "notes", f"ddl{case}", sql)
    output = result.stdout + result.stderr

    assert "test_a_second_connection_commits PASSED" in result.stdout, output
    assert "ERROR at teardown of test_a_second_connection_commits" in result.stdout, output
    assert "changed the schema through a connection of its own" in result.stdout
    for change in changes:
        assert f"    {change}" in result.stdout, output
    assert "fix: change the schema in a migration" in result.stdout
    # The next test does not run on the changed schema: the run stops, saying why.
    assert "test_the_next_test_runs_on_the_database_as_migrated PASSED" not in result.stdout
    assert "the run stopped: " in output
    assert result.returncode != 0
    assert "Traceback" not in output and "INTERNALERROR" not in output


@pytest.mark.parametrize("case", list(ROWS))
async def test_committed_rows_fail_the_test_and_the_next_runs_on_the_rows_as_migrated(
    harness_config: HarnessConfig, run_names: RunNames, tmp_path: Path, case: str
) -> None:
    sql, shown = ROWS[case]

    result = await _nested_run(harness_config, run_names, tmp_path / "notes", f"rows{case}", sql)
    output = result.stdout + result.stderr

    assert "ERROR at teardown of test_a_second_connection_commits" in result.stdout, output
    assert f"committed rows through a connection of its own ({shown})" in result.stdout, output
    assert "put the tables back as the migrations left them" in result.stdout
    assert "test_the_next_test_runs_on_the_database_as_migrated PASSED" in result.stdout, output
    # ...and so does a test after real commits (its tables are put back, seeds included).
    assert "test_real_commits_change_the_seeded_rows PASSED" in result.stdout, output
    assert "test_after_real_commits_too PASSED" in result.stdout, output
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
