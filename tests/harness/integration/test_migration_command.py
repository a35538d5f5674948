"""Writing a migration against throwaway servers, as the README says: `python -m
realstack.embedded run --migrated -- alembic revision --autogenerate -m ...` gives the command a
database of its own, already at head, in the app's URL variable, so autogenerate writes only
the new model's revision (on the server's empty test database Alembic refuses: "Target
database is not up to date"); the database is dropped when the command ends."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from realstack.config import HarnessConfig
from realstack.embedded.migrated import MigrationsFailedError, migrated_database
from realstack.engines import create_test_engine
from realstack.migrations import ENV_PY_SNIPPET
from realstack.project import Project
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.harness.helpers import database_exists, engine_on, write_migrations_project
from tests.harness.nested import REPO_ROOT, service_environment

from .embedded_support import IMPORT_ROOT, PACKAGE, cli_env, python_in

HEAD = "0001"  # the sample's one revision
# The app's env.py: the harness's snippet, and its own engine on the app's URL variable (what
# the migration command sets); its models are the sample's plus a new one, `tags`.
ENV_PY = f"""\
import asyncio
import os

from alembic import context
from sqlalchemy import Column, Integer, MetaData, Table
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.harness.sample.models import Base

config = context.config
target_metadata = MetaData()
for table in Base.metadata.sorted_tables:
    table.to_metadata(target_metadata)
Table("tags", target_metadata, Column("id", Integer, primary_key=True))


async def run_async_migrations() -> None:
    engine = create_async_engine(os.environ["DATABASE_URL"], poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


{ENV_PY_SNIPPET}


run_migrations_online()
"""


@pytest.fixture
def app_project(tmp_path: Path) -> Project:
    project = write_migrations_project(tmp_path / "app", "newrev")
    (project.root / "migrations" / "env.py").write_text(ENV_PY)
    return project


def run_cli(
    project: Project, run_base: Path, cache_dir: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """`python -m <launcher> run ARGS` in the project, which imports the sample's models."""
    return run_cli_command(project, run_base, cache_dir, "run", *args)


def run_cli_command(
    project: Project, run_base: Path, cache_dir: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = cli_env(run_base, cache_dir, PYTHONPATH=f"{IMPORT_ROOT}:{REPO_ROOT}")
    return python_in(project, env, "-m", PACKAGE, *args)


def revisions(project: Project) -> set[Path]:
    return set((project.root / "migrations" / "versions").glob("*.py"))


def test_migrated_runs_autogenerate_on_a_database_at_head_and_it_writes_the_new_revision(
    app_project: Project, run_base: Path, cache_dir: Path
) -> None:
    autogenerate = (
        "--",
        sys.executable,
        "-m",
        "alembic",
        "revision",
        "--autogenerate",
        "-m",
        "add tags",
    )
    before = revisions(app_project)

    on_empty = run_cli(app_project, run_base, cache_dir, "--after-ready", *autogenerate)
    unchanged = revisions(app_project)
    migrated = run_cli(app_project, run_base, cache_dir, "--migrated", *autogenerate)
    written = revisions(app_project) - before

    assert on_empty.returncode != 0
    assert "Target database is not up to date" in on_empty.stdout + on_empty.stderr
    assert unchanged == before
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert len(written) == 1
    (revision,) = written
    script = revision.read_text()
    assert revision.name.endswith("_add_tags.py")
    assert f"down_revision: str | None = '{HEAD}'" in script
    assert "op.create_table('tags'" in script
    assert "'notes'" not in script  # the database was at head: only the new model is new


async def _look(server_url: str, database: str) -> tuple[str | None, bool]:
    """The database's Alembic revision (None if it is gone), and whether it exists."""
    admin = create_test_engine(server_url, None, poolclass=NullPool)
    try:
        if not await database_exists(admin, database):
            return None, False
    finally:
        await admin.dispose()
    engine = engine_on(server_url, database)
    try:
        async with engine.connect() as conn:
            version = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
            return version.scalar_one(), True
    finally:
        await engine.dispose()


# Sync tests: migrated_database runs its own event loop, as in the command line.
def test_the_migrated_database_is_at_head_and_dropped_afterwards(
    app_project: Project, harness_config: HarnessConfig
) -> None:
    env = service_environment(harness_config, with_s3=False)
    server_url = harness_config.database_url

    with migrated_database(app_project, env) as url:
        database = make_url(url).database or ""
        inside = asyncio.run(_look(server_url, database))
    after = asyncio.run(_look(server_url, database))

    assert database.endswith("_migrated")
    assert inside == (HEAD, True)
    assert after == (None, False)


def test_a_failing_migration_is_one_message_naming_it(
    app_project: Project, harness_config: HarnessConfig
) -> None:
    (app_project.root / "migrations" / "versions" / "0002_broken.py").write_text(
        'revision = "0002"\ndown_revision = "0001"\n\n\ndef upgrade():\n'
        '    from alembic import op\n    op.execute("SELECT no_such_column FROM notes")\n'
    )
    env = service_environment(harness_config, with_s3=False)

    with pytest.raises(MigrationsFailedError) as failed, migrated_database(app_project, env):
        pass

    assert "--migrated: upgrading" in str(failed.value)
    assert "no_such_column" in str(failed.value)
    assert "fix:" in str(failed.value)


LIST_MIGRATED = (
    "import asyncio, os, asyncpg\n"
    "async def main():\n"
    "    conn = await asyncpg.connect(host='127.0.0.1', port=int(os.environ['POSTGRES_PORT']),"
    " user=os.environ['POSTGRES_USER'], password=os.environ['POSTGRES_PASSWORD'],"
    " database=os.environ['POSTGRES_DB'], timeout=5)\n"
    '    rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE '
    "'%\\\\_migrated'\")\n"
    "    print('migrated databases:', len(rows))\n"
    "    await conn.close()\n"
    "asyncio.run(main())\n"
)


def test_on_warm_services_the_revision_is_written_and_no_database_stays_behind(
    app_project: Project, run_base: Path, cache_dir: Path
) -> None:
    autogenerate = ("--", sys.executable, "-m", "alembic", "revision", "--autogenerate", "-m", "t")
    before = revisions(app_project)
    try:
        up = run_cli_command(app_project, run_base, cache_dir, "up")
        assert up.returncode == 0, up.stdout + up.stderr

        migrated = run_cli(app_project, run_base, cache_dir, "--migrated", *autogenerate)
        written = revisions(app_project) - before
        again = run_cli(
            app_project,
            run_base,
            cache_dir,
            "--after-ready",
            "--",
            sys.executable,
            "-c",
            LIST_MIGRATED,
        )
    finally:
        run_cli_command(app_project, run_base, cache_dir, "down")

    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "using the warm services" in migrated.stderr
    assert len(written) == 1
    assert "op.create_table('tags'" in next(iter(written)).read_text()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "migrated databases: 0" in again.stdout
