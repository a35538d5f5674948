"""The sweep of what killed runs left: databases and schemas stamped by this project's harness
on this machine whose process is gone. Never a live run's, never anything unstamped."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .janitor import autocommit_engine, schema_admin_engine, set_cleanup_deadline
from .project import Project
from .stamps import Stamp

_STAMPED = {
    "schema": "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace "
    "WHERE nspname LIKE 'test\\_%'",
    "database": "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
    "WHERE datname LIKE 'test\\_%'",
}


async def _dead(admin: AsyncEngine, kind: str, project: Project, include_kept: bool) -> list[str]:
    """The names of this project's stamped schemas or databases whose run is dead."""
    async with admin.connect() as conn:
        rows = (await conn.execute(text(_STAMPED[kind]))).all()
    return [
        name
        for name, comment in rows
        if (stamp := Stamp.from_json(project, comment)) is not None
        and stamp.owner_is_dead(include_kept=include_kept)
    ]


async def sweep_dead_schemas(
    admin: AsyncEngine, project: Project, *, include_kept: bool = False
) -> list[str]:
    """Drop the schemas of this project's harness runs on this machine whose process is gone."""
    dropped = await _dead(admin, "schema", project, include_kept)
    for name in dropped:
        async with admin.begin() as conn:
            await set_cleanup_deadline(conn)
            quoted = conn.dialect.identifier_preparer.quote_identifier(name)
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))
    return dropped


async def sweep_dead_databases(
    admin: AsyncEngine, project: Project, *, include_kept: bool = False
) -> list[str]:
    """Drop the databases of this project's harness runs on this machine whose process is gone.

    `admin` must be an AUTOCOMMIT engine (see autocommit_engine)."""
    dropped = await _dead(admin, "database", project, include_kept)
    async with admin.connect() as conn:
        for name in dropped:
            quoted = conn.dialect.identifier_preparer.quote_identifier(name)
            await conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    return dropped


async def sweep_dead_stores(
    server_url: str, project: Project, *, include_kept: bool = False
) -> list[str]:
    """Drop the databases and schemas of this project's dead runs on this machine; describe each."""
    admin = autocommit_engine(server_url)
    try:
        databases = await sweep_dead_databases(admin, project, include_kept=include_kept)
    finally:
        await admin.dispose()
    admin = schema_admin_engine(server_url)
    try:
        schemas = await sweep_dead_schemas(admin, project, include_kept=include_kept)
    finally:
        await admin.dispose()
    return [f"database {name}" for name in databases] + [f"schema {name}" for name in schemas]
