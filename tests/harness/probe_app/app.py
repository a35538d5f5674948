"""The probe app: the sample's table and settings, in the shapes other services use.

- its lifespan yields state (Starlette's lifespan state), which routes read from request.state;
- `get_sessionmaker` yields an async_sessionmaker; routes open `async with maker.begin()`;
- `current_user` needs a token the tests don't have (the adapter overrides it);
- `BlobStore` is a repository that writes to S3 with a boto3 client of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.harness.sample.attachments import own_s3_client
from tests.harness.sample.db import create_engine_for
from tests.harness.sample.models import Note
from tests.harness.sample.settings import S3Settings, Settings

GREETING = "hello from the app's lifespan"
# One token per start of the app's lifespan in this process: the tests count them.
LIFESPAN_STARTS: list[str] = []


class BlobStore:
    """Objects in the app's bucket, through a client of the store's own (not the harness's)."""

    def __init__(self, s3: S3Settings) -> None:
        self.bucket = s3.bucket
        self.client = own_s3_client(s3)

    async def put(self, key: str, body: bytes) -> None:
        await asyncio.to_thread(self.client.put_object, Bucket=self.bucket, Key=key, Body=body)


async def get_sessionmaker(request: Request) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield request.state.sessionmaker


async def current_user(request: Request) -> str:
    raise HTTPException(401, "no token")


MakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
UserDep = Annotated[str, Depends(current_user)]


class NoteIn(BaseModel):
    title: str


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        token = uuid.uuid4().hex
        LIFESPAN_STARTS.append(token)
        engine = create_engine_for(settings)
        try:
            yield {
                "sessionmaker": async_sessionmaker(engine, expire_on_commit=False),
                "greeting": GREETING,
                "started": token,
                "visits": [],
            }
        finally:
            await engine.dispose()

    app = FastAPI(title="probe", lifespan=lifespan)

    @app.get("/greeting")
    async def greeting(request: Request) -> dict[str, str]:
        return {"greeting": request.state.greeting, "started": request.state.started}

    @app.post("/visits")
    async def visit(request: Request) -> dict[str, Any]:
        """The lifespan's list is shared by every request; what a request sets is its own."""
        request.state.visits.append(1)
        before = getattr(request.state, "scratch", None)
        request.state.scratch = "set by an earlier request"
        return {"visits": len(request.state.visits), "scratch": before}

    @app.get("/whoami")
    async def whoami(user: UserDep) -> dict[str, str]:
        return {"user": user}

    @app.post("/notes", status_code=201)
    async def create_note(note: NoteIn, maker: MakerDep) -> dict[str, int]:
        async with maker.begin() as session:
            row = Note(title=note.title, body="")
            session.add(row)
            await session.flush()
            return {"id": row.id}

    @app.get("/notes")
    async def list_notes(maker: MakerDep) -> list[str]:
        async with maker.begin() as session:
            titles = await session.stream_scalars(select(Note.title).order_by(Note.id))
            return list(await titles.all())

    if settings.s3 is not None:
        store = BlobStore(settings.s3)

        @app.put("/blobs/{key}", status_code=204)
        async def put_blob(key: str, request: Request) -> None:
            await store.put(key, await request.body())

    return app
