"""Application factory: wires settings, engine, sessions and storage into a FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError

from api.config import Settings
from api.db import create_engine_for, create_sessionmaker
from api.routes import documents, health, tags
from api.storage import Storage, make_s3_client

logger = logging.getLogger(__name__)


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug must still answer JSON, and must not leak a stack trace to the client.
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"detail": "internal server error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Connection-level failures are an outage, not a bug: answer 503 so clients retry.
    logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "database is unavailable"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE
    )


def create_app(settings: Settings) -> FastAPI:
    """Build the app; no connection is opened until a request needs one."""
    engine = create_engine_for(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="docstore",
        version="0.1.0",
        description="A small document store: metadata in PostgreSQL, bytes in S3.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.storage = Storage(make_s3_client(settings), settings.s3_bucket)
    app.add_exception_handler(Exception, _unhandled_error)
    for outage in (OSError, OperationalError, InterfaceError):
        app.add_exception_handler(outage, _database_unavailable)
    app.include_router(health.router)
    app.include_router(documents.router)
    app.include_router(tags.router)
    return app
