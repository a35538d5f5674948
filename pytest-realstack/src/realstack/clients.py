"""In-process HTTP clients of the app under test, and the count of requests they made it
serve (the after-test fixtures empty the run's bucket only after a test that made some)."""

from __future__ import annotations

from typing import Any

import httpx

_served = [0]  # requests the apps under test served through asgi_client, this process


def requests_served() -> int:
    return _served[0]


def _counting(app: Any) -> Any:
    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            _served[0] += 1
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
