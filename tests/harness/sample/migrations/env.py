"""Alembic environment of the notes app, after the cookbook's "Sharing a Connection across one
or more programmatic migration commands": a caller (the test harness) may hand in a sync
Connection, already set to its schema; else we connect on our own from SAMPLE_DATABASE_URL."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool


def _app_package() -> str:
    """The app's dotted package name, from this file's place: the app can live anywhere."""
    folder, parts = Path(__file__).resolve().parent.parent, list[str]()
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


_app = importlib.import_module(_app_package())
models = importlib.import_module(f"{_app.__name__}.models")
db = importlib.import_module(f"{_app.__name__}.db")

config = context.config
target_metadata = models.Base.metadata


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    try:
        settings = _app.Settings.from_environment()
    except ValueError as exc:
        sys.exit(str(exc))
    engine = db.create_engine_for(settings, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            if settings.schema:
                await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{settings.schema}"'))
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


# The harness's snippet (realstack.migrations.ENV_PY_SNIPPET), verbatim.
def run_migrations_online() -> None:
    connection = config.attributes.get("connection")  # the harness's, in the tests
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())  # your own engine, as before


if context.is_offline_mode():
    sys.exit("the notes app has no offline (--sql) migrations")
run_migrations_online()
