"""Application factory: wires settings, engine, sessions and storage into a FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import ClientDisconnect

from api.config import Settings
from api.db import create_engine_for, create_sessionmaker
from api.deps import refuse_control_characters, refuse_repeated_parameters
from api.errors import cause_of, is_database_outage
from api.routes import documents, health, tags
from api.storage import Storage, StorageError
from api.upload_slots import UploadSlots
from api.write_guard import WriteGuard

logger = logging.getLogger(__name__)


def _database_unavailable(request: Request) -> JSONResponse:
    return JSONResponse(
        {"detail": "database is unavailable"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE
    )


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, StorageError):
        # The routes answer S3 failures themselves; one that gets here broke a download off
        # after its status line went out (the server then drops the connection, and the
        # client sees a body shorter than its Content-Length). One line says so.
        logger.warning("storage failed during %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": "storage is unavailable"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE
        )
    # A bug must still answer JSON, and must not leak a stack trace to the client.
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"detail": "internal server error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """An outage (connection lost, a deadline, the server shutting down) is a 503 that clients
    may retry; anything else the database refused is a bug of ours: a 500 and one log line."""
    if is_database_outage(exc):
        logger.warning(
            "database unavailable on %s %s: %s", request.method, request.url.path, cause_of(exc)
        )
        return _database_unavailable(request)
    logger.error("database error on %s %s: %s", request.method, request.url.path, cause_of(exc))
    return JSONResponse(
        {"detail": "internal server error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
    )


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    # Nobody is left to answer; what the request started has been undone by then.
    logger.info("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=499)


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
        dependencies=[Depends(refuse_control_characters), Depends(refuse_repeated_parameters)],
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.storage = Storage.from_settings(settings)
    app.state.upload_slots = UploadSlots(settings.max_active_uploads)
    app.add_exception_handler(Exception, _unhandled_error)
    # Registered for specific classes, these are answered inside the app: no second
    # traceback from the server, which re-raises what reaches the catch-all above.
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(OSError, _database_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    # Before any body is read: the token of a write, and the size of a JSON body.
    app.add_middleware(WriteGuard, settings=settings)
    app.include_router(health.router)
    app.include_router(documents.router)
    app.include_router(tags.router)
    return app
