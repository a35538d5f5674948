"""What a write must pass before any of its body is read (ASGI middleware).

FastAPI reads and parses a JSON body before it solves a route's dependencies, so the Bearer
check of `require_owner` came after the whole body had been buffered: an unauthenticated
200 MiB PATCH grew the process by 570 MiB. Here, for the write methods under /documents:

- no known Bearer token: 401 (as require_owner answers it), the body never read;
- a body that is not an upload (multipart, bounded by MAX_UPLOAD_BYTES as it streams) is
  bounded by MAX_JSON_BODY_BYTES: 413 from Content-Length at once, or as soon as more
  arrives than that (chunked, or a Content-Length that lied).

Reads stay public and untouched. The owner it finds is left in the request's state, where
require_owner takes it for the route: the token is compared once per write.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import NO_CREDENTIALS, OWNER_STATE_KEY, REFUSED_CREDENTIALS, owner_for_token
from api.config import Settings
from api.routes.documents import router as documents_router

# A PATCH body is a filename and a few tags: far below this.
MAX_JSON_BODY_BYTES = 64 * 1024
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
GUARDED_PREFIX = documents_router.prefix
TOO_LARGE = f"the body is larger than {MAX_JSON_BODY_BYTES} bytes"


class WriteGuard:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in WRITE_METHODS
            or not scope["path"].startswith(GUARDED_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        owner = self._owner(headers.get("authorization"))
        refusal = owner if isinstance(owner, JSONResponse) else None
        if refusal is None:
            scope["state"] = {**scope.get("state", {}), OWNER_STATE_KEY: owner}
        if refusal is None and not headers.get("content-type", "").startswith("multipart/"):
            refusal = _too_large_by_length(headers.get("content-length"))
            receive = _bounded(receive)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _owner(self, authorization: str | None) -> str | JSONResponse:
        """The owner the Bearer token names, or the 401 answer."""
        scheme, _, token = (authorization or "").partition(" ")
        owner = None
        if scheme.lower() != "bearer" or not token.strip():
            detail = NO_CREDENTIALS
        elif (owner := owner_for_token(self.settings.api_tokens, token.strip())) is None:
            detail = REFUSED_CREDENTIALS
        if owner is not None:
            return owner
        return JSONResponse(
            {"detail": detail},
            status_code=status.HTTP_401_UNAUTHORIZED,
            headers={"WWW-Authenticate": "Bearer", "Connection": "close"},
        )


def _too_large_by_length(content_length: str | None) -> JSONResponse | None:
    try:
        declared = int(content_length or 0)
    except ValueError:
        return None  # the server refuses a malformed Content-Length itself
    if declared <= MAX_JSON_BODY_BYTES:
        return None
    return _too_large()


def _too_large() -> JSONResponse:
    return JSONResponse(
        {"detail": TOO_LARGE},
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        headers={"Connection": "close"},
    )


def _bounded(receive: Receive) -> Receive:
    """`receive`, raising 413 (answered inside the app) once the body passes the limit."""
    seen = 0

    async def bounded_receive() -> Message:
        nonlocal seen
        message: dict[str, Any] = dict(await receive())
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_JSON_BODY_BYTES:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, TOO_LARGE)
        return message

    return bounded_receive
