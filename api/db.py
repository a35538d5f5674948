"""Async engine and session factory built from Settings; nothing connects until first use."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from api.config import DatabaseSettings, Settings


def engine_connect_args(settings: DatabaseSettings) -> dict[str, Any]:
    """asyncpg connect arguments: a connect deadline; DATABASE_SCHEMA becomes the session's
    search_path; for the service (Settings, not migrations) every command has a client-side
    deadline and every statement a server-side one."""
    args: dict[str, Any] = {"timeout": settings.database_connect_timeout}
    server_settings: dict[str, str] = {}
    if settings.database_schema is not None:
        server_settings["search_path"] = settings.database_schema
    if isinstance(settings, Settings):
        args["command_timeout"] = settings.database_command_timeout
        server_settings["statement_timeout"] = str(
            round(settings.database_statement_timeout * 1000)
        )
    if server_settings:
        args["server_settings"] = server_settings
    return args


def create_engine_for(settings: DatabaseSettings, **engine_options: Any) -> AsyncEngine:
    """Create the AsyncEngine for the configured database without opening a connection."""
    options: dict[str, Any] = {"pool_pre_ping": True, **engine_options}
    if isinstance(settings, Settings) and options.get("poolclass") is None:
        options.setdefault("pool_timeout", settings.database_pool_timeout)
    return create_async_engine(
        settings.database_url, connect_args=engine_connect_args(settings), **options
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory whose objects stay usable after commit (routes serialise them later)."""
    return async_sessionmaker(engine, expire_on_commit=False)
