"""The notes API: POST /notes, GET /notes, GET /notes/{id}; attachments only with S3."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .db import create_engine_for, find_note, get_session
from .models import TITLE_LENGTH, Note
from .settings import Settings

SessionDep = Annotated[AsyncSession, Depends(get_session)]


class NoteIn(BaseModel):
    title: str = Field(min_length=1, max_length=TITLE_LENGTH)
    body: str = ""


class NoteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    body: str
    created_at: datetime


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = create_engine_for(settings)
        try:
            yield
        finally:
            await app.state.engine.dispose()

    app = FastAPI(title="notes", lifespan=lifespan)
    app.state.settings = settings

    @app.post("/notes", status_code=201)
    async def create_note(note: NoteIn, session: SessionDep) -> NoteOut:
        row = Note(title=note.title, body=note.body)
        session.add(row)
        await session.commit()
        await session.refresh(row)
        return NoteOut.model_validate(row)

    @app.get("/notes")
    async def list_notes(session: SessionDep) -> list[NoteOut]:
        rows = (await session.scalars(select(Note).order_by(Note.id))).all()
        return [NoteOut.model_validate(row) for row in rows]

    @app.get("/notes/{note_id}")
    async def get_note(note_id: int, session: SessionDep) -> NoteOut:
        return NoteOut.model_validate(await find_note(session, note_id))

    if settings.s3 is not None:
        from .attachments import add_attachment_routes  # the only import of boto3

        add_attachment_routes(app, settings.s3)
    return app
