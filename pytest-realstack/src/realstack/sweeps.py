"""The sweep of what killed runs left: databases and schemas stamped by this project's harness
on this machine whose process is gone. Never a live run's, never anything unstamped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text

from .engines import admin_engine, autocommit_engine
from .janitor import drop_database, drop_schema
from .project import Project
from .stamps import Stamp

_STAMPED = {
    "schema": "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace "
    "WHERE nspname LIKE 'test\\_%'",
    "database": "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
    "WHERE datname LIKE 'test\\_%'",
}


def _dead(rows: Sequence[Sequence[Any]], project: Project, include_kept: bool) -> list[str]:
    """The names among (name, comment) `rows` stamped by this project's runs that are dead."""
    return [
        name
        for name, comment in rows
        if (stamp := Stamp.from_json(project, comment)) is not None
        and stamp.owner_is_dead(include_kept=include_kept)
    ]


async def sweep_dead_stores(
    server_url: str, project: Project, *, include_kept: bool = False
) -> list[str]:
    """Drop the databases and schemas of this project's dead runs on this machine; describe each.

    One connection looks for both (every run start does this); the drops, when there is
    something to drop, get connections of their own."""
    admin = autocommit_engine(server_url)
    try:
        async with admin.connect() as conn:
            databases = _dead(
                (await conn.execute(text(_STAMPED["database"]))).all(), project, include_kept
            )
            schemas = _dead(
                (await conn.execute(text(_STAMPED["schema"]))).all(), project, include_kept
            )
            for name in databases:
                await drop_database(conn, name)
    finally:
        await admin.dispose()
    if schemas:
        admin = admin_engine(server_url)
        try:
            for name in schemas:
                async with admin.begin() as conn:
                    await drop_schema(conn, name)
        finally:
            await admin.dispose()
    return [f"database {name}" for name in databases] + [f"schema {name}" for name in schemas]
