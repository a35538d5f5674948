"""In-process HTTP clients of the app under test, which hand each request the lifespan state
as a server does, and the count of requests they made it serve (the after-test fixtures empty
the run's bucket only after a test that made some)."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import httpx

_served = [0]  # requests the apps under test served through asgi_client, this process
# What each app's lifespan yielded, while it runs (fixtures.py, _session_app).
_lifespan_states: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def requests_served() -> int:
    return _served[0]


def serve_lifespan_state(app: Any, state: Mapping[str, Any] | None) -> None:
    """From now on, each request asgi_client sends `app` gets a shallow copy of `state` as
    scope["state"] (request.state in Starlette), as uvicorn and asgi-lifespan's
    LifespanManager give what the lifespan yielded; None: the app's lifespan has ended."""
    if state is None:
        _lifespan_states.pop(app, None)
    else:
        _lifespan_states[app] = dict(state)


def _counting(app: Any) -> Any:
    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            _served[0] += 1
        state = _lifespan_states.get(app)
        if state is not None and scope["type"] in ("http", "websocket"):
            scope["state"] = state.copy()
        await app(scope, receive, send)

    return counted


def asgi_client(app: Any, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """An httpx client that calls the app in-process (no socket); for adapters' own clients.
    It holds nothing to release (`aclose()` would only mark it closed), so a plain fixture may
    return it: an async one would cost each test two event-loop rounds of pytest-asyncio's."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_counting(app)),
        base_url="http://test",
        headers=headers or {},
    )
