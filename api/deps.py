"""FastAPI dependencies: the only way routes get a DB session, storage, settings or the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import NO_CREDENTIALS, OWNER_STATE_KEY, REFUSED_CREDENTIALS, owner_for_token
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


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` one in a worker
# thread, and a request must never wait for a thread just to read app.state.


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _control_characters(value: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)


async def refuse_control_characters(request: Request) -> None:
    """422 for a NUL or another control character in any query parameter (name or value):
    no parameter of this API may hold one, and PostgreSQL refuses NUL in text. The answer
    has FastAPI's usual validation shape."""
    problems = [
        {
            "type": "value_error",
            "loc": ["query", name],
            "msg": "must not contain control characters (such as NUL)",
        }
        for name, value in request.query_params.multi_items()
        if _control_characters(name) or _control_characters(value)
    ]
    if problems:
        raise RequestValidationError(problems)


async def refuse_repeated_parameters(request: Request) -> None:
    """422 for a query parameter given more than once (`?tag=a&tag=b`): every parameter of
    this API takes one value, and keeping only the last would answer a question nobody
    asked. Same shape as FastAPI's validation errors."""
    names = [name for name, _ in request.query_params.multi_items()]
    problems = [
        {
            "type": "value_error",
            "loc": ["query", name],
            "msg": f"given {names.count(name)} times; give it at most once",
        }
        for name in sorted(set(names))
        if names.count(name) > 1
    ]
    if problems:
        raise RequestValidationError(problems)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def require_owner(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The owner named by the Bearer token; 401 with WWW-Authenticate: Bearer otherwise. A
    write WriteGuard let through carries the owner it found already."""
    found: str | None = request.scope.get("state", {}).get(OWNER_STATE_KEY)
    if found is not None:
        return found
    if credentials is None:
        raise _unauthorized(NO_CREDENTIALS)
    owner = owner_for_token(settings.api_tokens, credentials.credentials)
    if owner is None:
        raise _unauthorized(REFUSED_CREDENTIALS)
    return owner


# scope="function": the session (and its pooled connection) is closed when the handler
# returns, not after a streamed response has been sent.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
StorageDep = Annotated[Storage, Depends(get_storage)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
OwnerDep = Annotated[str, Depends(require_owner)]
