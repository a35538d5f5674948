"""Half-sent requests against the service as it is deployed (`python -m api.serve`, uvicorn
with its bounds): a request whose headers trickle in is closed at HTTP_HEADER_TIMEOUT, and a
flood of them beyond the process's open-file limit leaves /health answering at once, with the
service's log holding a line or two about it, not one per attempt."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from realstack import HarnessConfig, sandbox

from tests.app_adapter import environment_of, settings_for
from tests.load_client import ServedApp, serve

HALF_REQUEST = b"GET /health HTTP/1.1\r\nHost: docstore\r\nX-Slow: "
OPEN_FILES = 256  # the service's limit in this test (a container's is often 1,024)
HALF_OPEN = 300  # more than that: they would take every descriptor
HEALTH_TIMEOUT_S = 3.0  # the service's own HEALTH_TIMEOUT


@asynccontextmanager
async def served(
    harness_config: HarnessConfig, name: str, open_files: int | None = None, **overrides: Any
) -> AsyncIterator[ServedApp]:
    async with sandbox(harness_config, name) as run:
        token = secrets.token_urlsafe(24)
        settings = settings_for(run, tokens={"alice": token}).model_copy(update=overrides)
        async with serve(environment_of(settings), open_files=open_files) as app:
            yield app


async def _closed_by_the_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await reader.read(1024) == b""
    except ConnectionError:
        return True


async def test_a_request_whose_headers_trickle_in_is_closed_at_the_header_deadline(
    harness_config: HarnessConfig,
) -> None:
    async with served(harness_config, "trickle", http_header_timeout=1.0) as app:
        port = int(app.base_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()

        async def trickle() -> None:  # a byte every 0.2 s: a keep-alive timer would never fire
            for byte in HALF_REQUEST + b"x" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)

        sender = asyncio.create_task(trickle())
        try:
            closed = await asyncio.wait_for(_closed_by_the_server(reader), timeout=10)
        finally:
            sender.cancel()
            writer.close()
        elapsed = time.monotonic() - started

        assert closed
        assert 0.9 <= elapsed < 4.0, elapsed


async def test_half_sent_requests_beyond_the_open_file_limit_leave_health_answering(
    harness_config: HarnessConfig,
) -> None:
    # A deadline longer than the test: only shedding can keep descriptors free here.
    async with served(
        harness_config, "halfopen", open_files=OPEN_FILES, http_header_timeout=60.0
    ) as app:
        port = int(app.base_url.rsplit(":", 1)[1])
        held = []
        try:
            for _ in range(HALF_OPEN):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(HALF_REQUEST)
                held.append(writer)
            # Those the service shed to keep descriptors free are reset by now: expected.
            await asyncio.gather(*(w.drain() for w in held), return_exceptions=True)

            started = time.monotonic()
            async with httpx.AsyncClient(base_url=app.base_url) as client:
                health = await client.get("/health", timeout=HEALTH_TIMEOUT_S + 1)
            elapsed = time.monotonic() - started
        finally:
            for writer in held:
                writer.close()

        assert health.status_code == 200, health.text
        assert elapsed < HEALTH_TIMEOUT_S, elapsed
        log = app.log()
        assert log.count("still waiting for request headers") <= 2, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
