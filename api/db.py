"""Async engine and session factory built from Settings; nothing connects until first use."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from api.config import DatabaseSettings


def engine_connect_args(settings: DatabaseSettings) -> dict[str, Any]:
    """asyncpg connect arguments; DATABASE_SCHEMA becomes the session's search_path."""
    if settings.database_schema is None:
        return {}
    return {"server_settings": {"search_path": settings.database_schema}}


def create_engine_for(settings: DatabaseSettings, **engine_options: Any) -> AsyncEngine:
    """Create the AsyncEngine for the configured database without opening a connection."""
    options: dict[str, Any] = {"pool_pre_ping": True, **engine_options}
    return create_async_engine(
        settings.database_url, connect_args=engine_connect_args(settings), **options
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory whose objects stay usable after commit (routes serialise them later)."""
    return async_sessionmaker(engine, expire_on_commit=False)
