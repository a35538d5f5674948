"""Alembic environment: reuse a connection handed in via config.attributes, else DATABASE_URL."""

from __future__ import annotations

import asyncio
import sys

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from api.config import DatabaseSettings, SettingsError, load_database_settings
from api.db import create_engine_for
from api.models import Base

config = context.config
target_metadata = Base.metadata


def _database_settings() -> DatabaseSettings:
    try:
        return load_database_settings()
    except SettingsError as exc:
        # Alembic would otherwise print a traceback around a configuration mistake.
        sys.exit(str(exc))


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    settings = _database_settings()
    engine = create_engine_for(settings, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            if settings.database_schema is not None:
                # The schema is a validated plain identifier, so quoting it here is safe.
                await connection.execute(
                    text(f'CREATE SCHEMA IF NOT EXISTS "{settings.database_schema}"')
                )
                await connection.commit()
            await connection.run_sync(_run_on)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    settings = _database_settings()
    context.configure(
        url=settings.database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # Cookbook "Sharing a Connection across one or more programmatic migration commands":
    # a caller (the test harness) may pass a sync Connection already set to its schema.
    shared = config.attributes.get("connection")
    if isinstance(shared, Connection):
        _run_on(shared)
    else:
        asyncio.run(_run_with_own_engine())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
