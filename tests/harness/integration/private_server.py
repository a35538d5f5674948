"""A PostgreSQL of a test module's own, where the tier is superuser over the server's Unix
socket: for what the tier's own test role (CREATEDB, no CREATEROLE) may not do, such as making
roles or changing server settings."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from realstack.config import embedded_settings
from realstack.embedded.launcher import RunningServices, embedded_services
from realstack.embedded.pg_cluster import SUPERUSER

from tests.harness.helpers import write_project
from tests.harness.integration.embedded_support import private_run_base
from tests.harness.nested import clean_environment


@dataclass(frozen=True)
class Role:
    """A login role of the private server, and the URL a run would be given for it."""

    name: str
    password: str
    url: str


def private_postgres_server(folder: Path) -> Iterator[RunningServices]:
    """A PostgreSQL of its own (the template the tier's cache holds): ~0.3 s."""
    project = write_project(folder / "pg-only", services=("postgres",))
    with contextmanager(private_run_base)() as base:
        env = clean_environment(project) | {"TEST_HARNESS_RUN_BASE": str(base)}
        with embedded_services(embedded_settings(project, env), report=None) as running:
            yield running


@asynccontextmanager
async def superuser(
    running: RunningServices, database: str = "postgres"
) -> AsyncIterator[asyncpg.Connection]:
    """The private server's superuser, over its Unix socket."""
    conn = await asyncpg.connect(
        host=str(running.run.path),
        port=running.postgres.port,
        user=SUPERUSER,
        database=database,
        timeout=5,
    )
    try:
        yield conn
    finally:
        await conn.close()


async def make_role(running: RunningServices, label: str, *grants: str) -> Role:
    """A login role that may not create databases (nor, unless granted, schemas); each grant
    is formatted with {role} and {database} (the server's test database)."""
    name, password = f"{label}_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    database = running.settings.credentials.pg_database
    async with superuser(running) as conn:
        await conn.execute(f"CREATE ROLE {name} LOGIN NOCREATEDB PASSWORD '{password}'")
        for grant in grants:
            await conn.execute(grant.format(role=name, database=database))
    url = f"postgresql+asyncpg://{name}:{password}@{running.postgres.address}/{database}"
    return Role(name, password, url)
