"""Helpers shared by the harness's own integration tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from realstack import janitor
from realstack.engines import create_test_engine
from realstack.engines import database_url as url_with_database
from realstack.janitor import DatabaseJanitor, SchemaJanitor, stamp_schema
from realstack.project import Project, load_project
from realstack.stamps import RunNames, Stamp
from sqlalchemy import Column, Integer, MetaData, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    probe = subprocess.Popen([sys.executable, "-c", "pass"])
    probe.wait()
    return probe.pid


def make_run_dir(base: Path, name: str, owner_pid: int, owner_start: float) -> Path:
    """A launcher's run directory under `base` whose state file names this owner."""
    from realstack.embedded.rundir import STATE_FILE, RunState

    run = base / name
    run.mkdir()
    (run / STATE_FILE).write_text(RunState(owner_pid, owner_start).dump())
    return run


def names_for(run_names: RunNames, label: str) -> RunNames:
    """Names of a made-up run beside this one (its database, schema and bucket are unique)."""
    run_id = f"{run_names.run_id}_{label}{uuid.uuid4().hex[:6]}"
    return RunNames(run_names.project, run_id, run_names.worker)


async def schema_exists(admin: AsyncEngine, name: str) -> bool:
    async with admin.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = :n"), {"n": name}
        )
    return bool(found == 1)


async def schemas_like(admin: AsyncEngine, pattern: str) -> list[str]:
    async with admin.connect() as conn:
        rows = await conn.execute(
            text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p ORDER BY 1"),
            {"p": pattern},
        )
        return list(rows.scalars())


async def drop_schema(admin: AsyncEngine, name: str) -> None:
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


def autocommit(admin: AsyncEngine) -> AsyncEngine:
    """The same engine outside a transaction block, for CREATE and DROP DATABASE."""
    return admin.execution_options(isolation_level="AUTOCOMMIT")


async def database_exists(admin: AsyncEngine, name: str) -> bool:
    async with admin.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name}
        )
    return bool(found == 1)


async def databases_like(admin: AsyncEngine, pattern: str) -> list[str]:
    async with admin.connect() as conn:
        rows = await conn.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE :p ORDER BY 1"),
            {"p": pattern},
        )
        return list(rows.scalars())


async def database_stamp(admin: AsyncEngine, name: str) -> str | None:
    """The database's comment (where the harness writes its stamp)."""
    async with admin.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"
            ),
            {"n": name},
        )
    return None if found is None else str(found)


async def create_database(admin: AsyncEngine, name: str, stamp: Stamp | None = None) -> None:
    """A database named `name`, stamped with `stamp` (or not at all)."""
    async with autocommit(admin).connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
        if stamp is not None:
            comment = stamp.to_json().replace("'", "''")
            await conn.exec_driver_sql(f"COMMENT ON DATABASE \"{name}\" IS '{comment}'")


async def drop_database(admin: AsyncEngine, name: str) -> None:
    async with autocommit(admin).connect() as conn:
        await janitor.drop_database(conn, name)


async def run_leftovers(admin: AsyncEngine, run_id: str) -> list[str]:
    """The databases and schemas on the server whose names are a run's (`test_<run>_...`)."""
    pattern = f"test\\_{run_id.replace('-', '_').lower()}%"
    return [f"database {n}" for n in await databases_like(admin, pattern)] + [
        f"schema {n}" for n in await schemas_like(admin, pattern)
    ]


def engine_on(server_url: str, database: str) -> AsyncEngine:
    """An engine on another database of the same server, holding no connection."""
    return create_test_engine(url_with_database(server_url, database), None, poolclass=NullPool)


def write_project(
    root: Path,
    services: tuple[str, ...] = ("postgres", "s3"),
    *,
    name: str = "sample",
    alembic_config: str = "pyproject.toml",
    template_inputs: Sequence[str] = (),
) -> Project:
    """A minimal project named `name` in `root`, for tests that need a Project."""
    root.mkdir(parents=True, exist_ok=True)
    inputs = f"template_inputs = {json.dumps(list(template_inputs))}\n" if template_inputs else ""
    (root / "pyproject.toml").write_text(
        "[tool.harness]\n"
        f"name = {json.dumps(name)}\n"
        f"services = {json.dumps(list(services))}\n"
        'adapter = "sample.adapter"\n'
        f"alembic_config = {json.dumps(alembic_config)}\n" + inputs
    )
    return load_project(root / "pyproject.toml")


SAMPLE = Path(__file__).resolve().parent / "sample"
# The scratch projects' env.py: the harness's shared connection and nothing else, so the
# copied migrations need no app package around them.
SCRATCH_ENV_PY = '''"""Migrations on the connection the harness hands in."""

from alembic import context

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
'''


def write_migrations_project(
    root: Path,
    name: str,
    services: tuple[str, ...] = ("postgres",),
    *,
    template_inputs: Sequence[str] = (),
) -> Project:
    """A project named `name` in `root` with its own copy of the sample app's Alembic files
    (alembic.ini, the script template and the migrations; a minimal env.py), to edit or to run:
    what it migrates to is the sample's schema (sample/models.py). The files `template_inputs`
    names must exist before."""
    scripts = root / "migrations"
    scripts.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE / "alembic.ini", root / "alembic.ini")
    shutil.copy(SAMPLE / "migrations" / "script.py.mako", scripts / "script.py.mako")
    shutil.copytree(
        SAMPLE / "migrations" / "versions",
        scripts / "versions",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (scripts / "env.py").write_text(SCRATCH_ENV_PY)
    return write_project(
        root, services, name=name, alembic_config="alembic.ini", template_inputs=template_inputs
    )


def with_extra_column(metadata: MetaData, table: str = "notes") -> MetaData:
    """A copy of `metadata` whose `table` has one more column (a model no migration made)."""
    copy = MetaData()
    for each in metadata.sorted_tables:
        each.to_metadata(copy)
    copy.tables[table].append_column(Column("extra", Integer))
    return copy


async def drop_databases_starting(admin: AsyncEngine, prefix: str) -> list[str]:
    """Drop every database whose name starts with `prefix`, templates too (a test's own)."""
    async with autocommit(admin).connect() as conn:
        rows = await conn.execute(
            text("SELECT datname FROM pg_database WHERE starts_with(datname, :p) ORDER BY 1"),
            {"p": prefix},
        )
        names = list(rows.scalars())
        for name in names:
            await janitor.drop_database(conn, name)
    return names


@dataclass
class ScratchStore:
    """A made-up run's database or schema (`kind`) on the test server, for the janitor and
    sweep tests: created with or without a stamp, holding one precious row."""

    kind: str  # "database" or "schema"
    admin: AsyncEngine  # on the server's test database
    server_url: str
    names: RunNames

    @property
    def name(self) -> str:
        return self.names.database if self.kind == "database" else self.names.schema

    @property
    def table(self) -> str:
        return "precious" if self.kind == "database" else f'"{self.name}".precious'

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction where the store's tables are (its own database, or the admin's)."""
        if self.kind == "schema":
            async with self.admin.begin() as conn:
                yield conn
            return
        engine = engine_on(self.server_url, self.name)
        try:
            async with engine.begin() as conn:
                yield conn
        finally:
            await engine.dispose()

    async def create(self, stamp: Stamp | None) -> None:
        if self.kind == "database":
            await create_database(self.admin, self.name, stamp)
        else:
            async with self.admin.begin() as conn:
                if stamp is None:
                    await conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
                else:
                    await stamp_schema(conn, self.name, stamp, create=True)
        async with self.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {self.table} (id int)"))
            await conn.execute(text(f"INSERT INTO {self.table} VALUES (1)"))

    def janitor(self) -> DatabaseJanitor | SchemaJanitor:
        """This made-up run's own janitor for the store (it holds no connection)."""
        if self.kind == "database":
            return DatabaseJanitor(autocommit(self.admin), self.server_url, self.names)
        return SchemaJanitor(self.admin, self.names, url=self.server_url)

    async def exists(self) -> bool:
        if self.kind == "database":
            return await database_exists(self.admin, self.name)
        return await schema_exists(self.admin, self.name)

    async def rows(self) -> int:
        async with self.begin() as conn:
            return int(await conn.scalar(text(f"SELECT count(*) FROM {self.table}")) or 0)

    async def drop(self) -> None:
        if self.kind == "database":
            await drop_database(self.admin, self.name)
        else:
            await drop_schema(self.admin, self.name)
