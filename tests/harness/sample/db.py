"""The engine, and the one way routes get a session (tests replace get_session)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from .models import Note
from .settings import Settings


def create_engine_for(settings: Settings, **options: Any) -> AsyncEngine:
    """Nothing connects until first use; the schema becomes the session's search_path."""
    connect_args = {"server_settings": {"search_path": settings.schema}} if settings.schema else {}
    return create_async_engine(settings.database_url, connect_args=connect_args, **options)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(request.app.state.engine, expire_on_commit=False) as session:
        yield session


async def find_note(session: AsyncSession, note_id: int) -> Note:
    note = await session.get(Note, note_id)
    if note is None:
        raise HTTPException(404, f"no note {note_id}")
    return note
