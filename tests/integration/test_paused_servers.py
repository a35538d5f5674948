"""Each real server paused in turn (SIGSTOP through the harness's `server_faults`), under the
service served by uvicorn with its default deadlines (issue 11, rows 3 and 4):

- /health answers 503 naming the paused server (or both) within 5 s;
- reads and writes that need it fail with 503 within 10 s (what needs only the other server
  still works);
- after the resume everything works again, and once `storage_gc` has run, the bucket holds
  exactly the objects that have rows: no orphaned object, no dangling row.

The uvicorn process has a stamped, migrated database and bucket of its own (the sandbox): it
commits for real, outside the test's transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from realstack import HarnessConfig, ServerFaults, sandbox

from api import Settings
from api.config import MIB
from api.db import create_engine_for, create_sessionmaker
from api.storage import Storage
from api.storage_gc import sweep
from tests.app_adapter import environment_of, settings_for
from tests.helpers import bearer
from tests.load_client import ServedApp, serve, stored_keys

HEALTH_DEADLINE_S = 5.0
REQUEST_DEADLINE_S = 10.0  # the bound for the default deadlines
CLIENT_TIMEOUT_S = 30.0  # only so that a hang fails instead of waiting for pytest-timeout
OWNER = "alice"


def _socket_buffer_max(name: str) -> int:
    """The most one TCP socket may buffer (Linux autotunes up to this), in bytes."""
    path = Path(f"/proc/sys/net/ipv4/{name}")
    return int(path.read_text().split()[2]) if path.exists() else 8 * MIB


# More than the socket buffers between S3 and the service can hold (the service's receive
# buffer, and on the Docker path a proxy's in between, each autotuned up to tcp_rmem's
# maximum, 32 MiB here): a download of it is still streaming when S3 is paused. With 24 MiB,
# S3 had sometimes sent it all before the pause.
BIG_BYTES = max(
    24 * MIB, 2 * _socket_buffer_max("tcp_rmem") + 2 * _socket_buffer_max("tcp_wmem") + 8 * MIB
)


@asynccontextmanager
async def served_app(
    harness_config: HarnessConfig, name: str
) -> AsyncIterator[tuple[Settings, ServedApp, httpx.AsyncClient]]:
    token = secrets.token_urlsafe(16)
    async with sandbox(harness_config, name) as run:
        settings = settings_for(run, tokens={OWNER: token}, max_upload_bytes=BIG_BYTES)
        async with (
            serve(environment_of(settings)) as served,
            httpx.AsyncClient(
                base_url=served.base_url, headers=bearer(token), timeout=CLIENT_TIMEOUT_S
            ) as client,
        ):
            yield settings, served, client


async def timed(request: Coroutine[Any, Any, httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


async def upload(client: httpx.AsyncClient, content: bytes) -> dict[str, Any]:
    response = await client.post("/documents", files={"file": ("a.bin", content)})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def collect_garbage(settings: Settings) -> None:
    """What the deployment's cron does: `python -m api.storage_gc`, in process."""
    engine = create_engine_for(settings)
    try:
        result = await sweep(create_sessionmaker(engine), Storage.from_settings(settings))
    finally:
        await engine.dispose()
    assert result.failed == 0 and result.pending == 0, result


async def assert_everything_works(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200, health.text
    content = secrets.token_bytes(2000)
    created = await upload(client, content)
    downloaded = await client.get(f"/documents/{created['id']}/content")
    assert hashlib.sha256(downloaded.content).hexdigest() == created["sha256"]
    assert (await client.delete(f"/documents/{created['id']}")).status_code == 204


def assert_quiet_log(served: ServedApp, broken_downloads: int = 0) -> None:
    """No traceback of the app's; a download broken off after its status line is one line of
    the app's, and the server's own "Exception in ASGI application" (uvicorn logs every
    exception raised after a response has started)."""
    log = served.log()
    assert "unhandled error" not in log, log[-3000:]
    assert log.count("WARNING api.app: storage failed during GET") == broken_downloads
    assert log.count("Exception in ASGI application") == broken_downloads, log[-3000:]
    if not broken_downloads:
        assert "Traceback" not in log, log[-3000:]


async def test_with_s3_paused_health_names_it_and_s3_calls_fail_fast_then_nothing_is_orphaned(
    harness_config: HarnessConfig, server_faults: ServerFaults
) -> None:
    async with served_app(harness_config, "s3pause") as (settings, served, client):
        kept = await upload(client, b"kept through the pause")
        doomed = await upload(client, b"deleted during the pause")
        big = await upload(client, secrets.token_bytes(BIG_BYTES))
        streaming = await client.send(
            client.build_request("GET", f"/documents/{big['id']}/content"), stream=True
        )
        chunks = streaming.aiter_raw()
        received = len(await anext(chunks))

        with server_faults.paused("s3"):
            (
                (health, health_s),
                (download, download_s),
                (new_upload, upload_s),
                (delete, delete_s),
                (listing, listing_s),
                (metadata, _),
            ) = await asyncio.gather(
                timed(client.get("/health")),
                timed(client.get(f"/documents/{kept['id']}/content")),
                timed(client.post("/documents", files={"file": ("b.bin", b"during the pause")})),
                timed(client.delete(f"/documents/{doomed['id']}")),
                timed(client.get("/documents")),
                timed(client.get(f"/documents/{kept['id']}")),
            )
            # The download under way breaks off: a body shorter than its Content-Length.
            try:
                async with asyncio.timeout(REQUEST_DEADLINE_S):
                    async for chunk in chunks:
                        received += len(chunk)
            except httpx.RemoteProtocolError:
                pass
            finally:
                await streaming.aclose()
            assert 0 < received < BIG_BYTES

        assert health.status_code == 503, health.text
        assert health.json() == {
            "database": "ok",
            "storage": "unavailable",
            "detail": "unavailable: storage",
        }
        assert health_s < HEALTH_DEADLINE_S
        assert (download.status_code, download.json()) == (
            503,
            {"detail": "storage is unavailable"},
        )
        assert download_s < REQUEST_DEADLINE_S
        assert new_upload.status_code == 503, new_upload.text
        assert "storage" in new_upload.json()["detail"]
        assert upload_s < REQUEST_DEADLINE_S
        # The row goes at once; the object waits in the outbox for storage_gc.
        assert delete.status_code == 204
        assert delete_s < REQUEST_DEADLINE_S
        assert listing.status_code == metadata.status_code == 200
        assert kept["id"] in [d["id"] for d in listing.json()["items"]]
        assert listing_s < 1.0  # what needs only PostgreSQL does not wait for S3

        # The failed upload's key and the deleted document's object are in the outbox: S3
        # may still have written them (a PUT it had queued while paused lands on resume).
        assert (await stored_keys(settings)).outbox == 2
        await collect_garbage(settings)
        after = await stored_keys(settings)
        assert after.rows == after.objects == {f"documents/{i}" for i in (kept["id"], big["id"])}
        assert after.outbox == 0
        await assert_everything_works(client)
    assert_quiet_log(served, broken_downloads=1)


async def test_with_postgresql_paused_health_names_it_and_requests_fail_fast_then_no_orphan(
    harness_config: HarnessConfig, server_faults: ServerFaults
) -> None:
    async with served_app(harness_config, "pgpause") as (settings, served, client):
        kept = await upload(client, b"kept through the pause")
        document = f"/documents/{kept['id']}"

        with server_faults.paused("postgres"):
            answers = await asyncio.gather(
                timed(client.get("/health")),
                timed(client.get("/documents")),
                timed(client.get("/tags")),
                timed(client.get(document)),
                timed(client.get(f"{document}/content")),
                timed(client.post("/documents", files={"file": ("b.bin", b"during the pause")})),
                timed(client.patch(document, json={"tags": ["x"]}, headers={"If-Match": "1"})),
                timed(client.delete(document)),
            )
            with server_faults.paused("s3"):  # both at once: /health still answers in time
                both, both_s = await timed(client.get("/health"))

        assert both.status_code == 503, both.text
        assert both.json()["detail"] == "unavailable: database, storage"
        assert both_s < HEALTH_DEADLINE_S
        (health, health_s), *requests = answers
        assert health.status_code == 503, health.text
        assert health.json() == {
            "database": "unavailable",
            "storage": "ok",
            "detail": "unavailable: database",
        }
        assert health_s < HEALTH_DEADLINE_S
        for response, seconds in requests:
            where = f"{response.request.method} {response.request.url.path}"
            assert response.status_code == 503, (where, response.text)
            assert "database is unavailable" in response.json()["detail"], where
            assert seconds < REQUEST_DEADLINE_S, (where, seconds)

        after = await stored_keys(settings)
        # The upload's object was deleted when its row could not be written.
        assert after.rows == after.objects == {f"documents/{kept['id']}"}
        assert after.outbox == 0
        got = await client.get(document)
        assert got.status_code == 200 and got.json() == kept
        await assert_everything_works(client)
    assert_quiet_log(served)
