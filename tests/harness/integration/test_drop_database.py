"""Dropping a run's database as a role that is no superuser (janitor.drop_database), on a
PostgreSQL of this module's own where the tier may change server settings and make roles.

PostgreSQL 18's DROP DATABASE ... WITH (FORCE) refuses outright, for such a role, when an
autovacuum worker is vacuuming the database ("permission denied to terminate process"); a run
that wrote enough rows met one at its teardown in CI. The drop must go through anyway, and a
session the role truly may not end is named with the fix, the database left as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from realstack.embedded.launcher import RunningServices
from realstack.engines import autocommit_engine
from realstack.janitor import StoreInUseError, drop_database
from realstack.process import apoll_until
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness.integration.private_server import Role, make_role, superuser

DEADLINE_S = 30.0
# Autovacuum wakes every second, takes any table with a dead row, and is throttled so hard
# that its worker stays in the database for many seconds.
EAGER_SLOW_AUTOVACUUM = {
    "autovacuum_naptime": "1",
    "autovacuum_vacuum_threshold": "0",
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_vacuum_cost_delay": "100",
    "autovacuum_vacuum_cost_limit": "1",
}
AUTOVACUUM_IN = (
    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'autovacuum worker'"
)


@pytest_asyncio.fixture
async def dropper(private_postgres: RunningServices) -> AsyncIterator[tuple[Role, AsyncEngine]]:
    """A role like the tier's: it may create databases, and is no superuser."""
    role = await make_role(private_postgres, "dropper", "ALTER ROLE {role} CREATEDB")
    engine = autocommit_engine(role.url)
    yield role, engine
    await engine.dispose()


async def create_database(engine: AsyncEngine) -> str:
    name = f"drop_{uuid.uuid4().hex[:8]}"
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    return name


async def database_exists(running: RunningServices, name: str) -> bool:
    async with superuser(running) as conn:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


async def test_an_autovacuum_worker_in_the_database_does_not_stop_its_drop(
    private_postgres: RunningServices, dropper: tuple[Role, AsyncEngine]
) -> None:
    _, engine = dropper
    name = await create_database(engine)
    async with superuser(private_postgres) as su:
        for setting, value in EAGER_SLOW_AUTOVACUUM.items():
            await su.execute(f"ALTER SYSTEM SET {setting} = {value}")
        await su.execute("SELECT pg_reload_conf()")
        try:
            async with superuser(private_postgres, name) as owner_db:
                await owner_db.execute(
                    "CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g; DELETE FROM t"
                )
            worker = await apoll_until(
                lambda: su.fetchval(AUTOVACUUM_IN, name), timeout_s=DEADLINE_S
            )
            assert worker, f"no autovacuum worker came to {name} within {DEADLINE_S} s"

            async with engine.connect() as conn:
                with pytest.raises(DBAPIError, match="permission denied to terminate process"):
                    await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
                await drop_database(conn, name)
        finally:
            await su.execute("ALTER SYSTEM RESET ALL")
            await su.execute("SELECT pg_reload_conf()")

    assert not await database_exists(private_postgres, name)


async def test_a_session_of_another_role_is_named_with_the_fix_and_the_database_kept(
    private_postgres: RunningServices, dropper: tuple[Role, AsyncEngine]
) -> None:
    role, engine = dropper
    name = await create_database(engine)
    other = await make_role(private_postgres, "other")  # PUBLIC may connect to a new database
    held = await asyncpg.connect(
        other.url.replace("postgresql+asyncpg", "postgresql").rsplit("/", 1)[0] + f"/{name}",
        server_settings={"application_name": "someone-elses-tool"},
    )
    try:
        async with engine.connect() as conn:
            with pytest.raises(StoreInUseError) as refused:
                await drop_database(conn, name)
        message = str(refused.value)
        assert f"could not drop database {name!r}" in message
        assert f"pid {held.get_server_pid()} ({other.name}, someone-elses-tool)" in message
        assert f"GRANT pg_signal_backend TO {role.name}" in message
        assert other.password not in message and role.password not in message
        assert await database_exists(private_postgres, name)
    finally:
        await held.close()
    async with engine.connect() as conn:
        await drop_database(conn, name)
    assert not await database_exists(private_postgres, name)
