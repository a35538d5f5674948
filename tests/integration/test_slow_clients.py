"""Slow, idle and vanishing clients against the service served by uvicorn, over raw sockets
(issue 11, rows 1, 2 and 9):

- a client that hangs up at any byte of its upload leaves no object, no open multipart upload
  and no row, and the service logs one info line for it, without a traceback;
- while twice anyio's worker-thread limit (2 x 40) of uploads sit idle, /health answers
  within 5 s and a download and a small upload succeed; afterwards the bucket holds exactly
  the objects that have rows;
- an upload that goes quiet gets 408 after UPLOAD_IDLE_TIMEOUT, and one beyond
  MAX_ACTIVE_UPLOADS gets 503 with Retry-After at once; neither leaves anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
from realstack import HarnessConfig, sandbox

from api import Settings
from api.config import MIB
from api.storage import PART_BYTES, make_s3_client
from tests.app_adapter import environment_of, settings_for
from tests.helpers import bearer, eventually
from tests.load_client import SLOW_STAGES, ServedApp, open_slow_upload, serve, stored_keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

HEALTH_DEADLINE_S = 5.0
SETTLE_DEADLINE_S = 20.0  # for the service to notice hang-ups and clean up after them
ANYIO_THREADS = 40  # anyio's default worker-thread limit, which idle uploads used to exhaust
DISCONNECTED = "INFO api.app: client disconnected during POST /documents"


@asynccontextmanager
async def served(
    harness_config: HarnessConfig, name: str, **overrides: Any
) -> AsyncIterator[tuple[Settings, ServedApp, str]]:
    """uvicorn on a sandbox of its own, with `overrides` over the test settings; yields the
    settings, the served app and its owner's token."""
    token = secrets.token_urlsafe(16)
    async with sandbox(harness_config, name) as run:
        settings = settings_for(run, tokens={"alice": token}).model_copy(update=overrides)
        async with serve(environment_of(settings)) as app:
            yield settings, app, token


def client_of(app: ServedApp, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=app.base_url, headers=bearer(token), timeout=30.0)


def open_multipart_uploads(s3: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


async def settled(settings: Settings, app: ServedApp, disconnects: int) -> None:
    """Wait until the service logged `disconnects` hang-ups and its bucket matches its rows."""

    async def done() -> bool:
        if app.log().count(DISCONNECTED) < disconnects:
            return False
        return (await stored_keys(settings)).consistent

    await eventually(done, SETTLE_DEADLINE_S, f"{disconnects} hang-ups handled")


def assert_one_quiet_line_per_disconnect(app: ServedApp, disconnects: int) -> None:
    log = app.log()
    assert log.count(DISCONNECTED) == disconnects, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "unhandled error" not in log, log[-3000:]


# ---------------------------------------------------------------- rows 1 and 9: hang-ups


async def test_a_client_hanging_up_at_any_byte_leaves_no_object_no_upload_and_no_row(
    harness_config: HarnessConfig,
) -> None:
    # A file larger than one part goes up as a multipart upload: the "mid-file" hang-up of
    # the big file (past its first part) leaves one open, which must be aborted.
    big = secrets.token_bytes(2 * PART_BYTES + MIB)
    small = secrets.token_bytes(300 * 1024)
    async with served(harness_config, "hangup", max_upload_bytes=32 * MIB) as (
        settings,
        app,
        token,
    ):
        s3 = make_s3_client(settings)
        cases = [(stage, small) for stage in SLOW_STAGES] + [("mid-file", big)]
        for number, (stage, content) in enumerate(cases, start=1):
            slow = await open_slow_upload(app.base_url, token, content, stage)
            if stage == "file":  # the whole file part is in: wait until it is stored
                await eventually(
                    lambda: _has_objects(settings, 1), SETTLE_DEADLINE_S, f"{stage}: object"
                )
            if content is big and stage == "mid-file":
                await eventually(
                    lambda: _true(open_multipart_uploads(s3, settings.s3_bucket)),
                    SETTLE_DEADLINE_S,
                    "a multipart upload opened",
                )
            slow.close()
            await settled(settings, app, number)
            after = await stored_keys(settings)
            assert after.rows == after.objects == frozenset(), (stage, len(content), after)
            assert after.outbox == 0
            assert open_multipart_uploads(s3, settings.s3_bucket) == [], stage

        async with client_of(app, token) as client:  # and the service is fine
            assert (
                await client.post("/documents", files={"file": ("a", b"ok")})
            ).status_code == 201
    assert_one_quiet_line_per_disconnect(app, len(cases))


async def _has_objects(settings: Settings, count: int) -> bool:
    return len((await stored_keys(settings)).objects) >= count


async def _true(value: object) -> bool:
    return bool(value)


# ---------------------------------------------------------------- row 2: idle uploads


async def test_while_twice_the_thread_limit_of_uploads_sit_idle_the_service_still_serves(
    harness_config: HarnessConfig,
) -> None:
    idle_count = 2 * ANYIO_THREADS
    async with (
        served(harness_config, "idle") as (settings, app, token),
        client_of(app, token) as client,
    ):
        content = secrets.token_bytes(100_000)
        existing = (await client.post("/documents", files={"file": ("e", content)})).json()
        # Half stop in the middle of the file, half right after it (their objects are
        # stored, and the service waits for the rest of the form).
        idle = [
            await open_slow_upload(
                app.base_url, token, b"i" * 200_000, "mid-file" if n % 2 else "file"
            )
            for n in range(idle_count)
        ]
        stored_by_idle = idle_count // 2
        await eventually(
            lambda: _has_objects(settings, 1 + stored_by_idle),
            SETTLE_DEADLINE_S,
            "the idle uploads' files stored",
        )

        async with asyncio.timeout(HEALTH_DEADLINE_S):
            health = await client.get("/health")
        assert health.status_code == 200, health.text
        async with asyncio.timeout(HEALTH_DEADLINE_S):
            download = await client.get(f"/documents/{existing['id']}/content")
            small = await client.post("/documents", files={"file": ("s", b"small")})
        assert hashlib.sha256(download.content).hexdigest() == existing["sha256"]
        assert small.status_code == 201, small.text

        for upload in idle:
            upload.close()
        await settled(settings, app, idle_count)
        after = await stored_keys(settings)
        expected = {f"documents/{existing['id']}", f"documents/{small.json()['id']}"}
        assert after.rows == after.objects == expected
    assert_one_quiet_line_per_disconnect(app, idle_count)


async def test_an_upload_that_goes_quiet_gets_408_and_one_too_many_gets_503_at_once(
    harness_config: HarnessConfig,
) -> None:
    async with served(harness_config, "shed", upload_idle_timeout=1.0, max_active_uploads=2) as (
        settings,
        app,
        token,
    ):
        quiet = [
            await open_slow_upload(app.base_url, token, b"q" * 50_000, stage)
            for stage in ("mid-file", "file")
        ]
        await eventually(lambda: _has_objects(settings, 1), SETTLE_DEADLINE_S, "one stored")
        async with client_of(app, token) as client:
            shed = await client.post("/documents", files={"file": ("x", b"one too many")})
        assert shed.status_code == 503, shed.text
        assert shed.headers["Retry-After"] == "1"
        assert "too many uploads in progress" in shed.json()["detail"]

        for upload in quiet:
            answer = await upload.answer(SETTLE_DEADLINE_S)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b"nothing was stored" in answer
            upload.close()
        after = await stored_keys(settings)
        assert after.rows == after.objects == frozenset()
        async with client_of(app, token) as client:  # the slots are free again
            assert (
                await client.post("/documents", files={"file": ("a", b"ok")})
            ).status_code == 201
