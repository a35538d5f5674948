"""The notes app's adapter: everything the harness core knows of this app."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from .app import create_app as create_notes_app
from .db import get_session
from .models import Base, Note
from .settings import Settings

if TYPE_CHECKING:
    from realstack.config import RunTargets

metadata = Base.metadata
session_dependency = get_session


def create_app(run: RunTargets) -> FastAPI:
    return create_notes_app(Settings.from_targets(run))


def app_environment(run: RunTargets) -> dict[str, str]:
    return Settings.from_targets(run).environment()


@pytest_asyncio.fixture
async def note(db_session: AsyncSession) -> Note:
    """One note, written in the test's own transaction (gone after the test)."""
    row = Note(title="a note from a fixture", body="made by the adapter")
    db_session.add(row)
    await db_session.flush()
    return row
