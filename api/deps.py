"""FastAPI dependencies: the only way routes get a DB session, storage, settings or the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import owner_for_token
from api.config import Settings
from api.storage import Storage

_bearer = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <token>`; the token names the owner (API_TOKENS).",
)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One AsyncSession per request from app.state.sessionmaker (tests override this)."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        yield session


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def require_owner(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The owner named by the Bearer token; 401 with WWW-Authenticate: Bearer otherwise."""
    if credentials is None:
        raise _unauthorized("missing credentials: send Authorization: Bearer <token>")
    owner = owner_for_token(settings.api_tokens, credentials.credentials)
    if owner is None:
        raise _unauthorized("invalid token")
    return owner


SessionDep = Annotated[AsyncSession, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
OwnerDep = Annotated[str, Depends(require_owner)]
