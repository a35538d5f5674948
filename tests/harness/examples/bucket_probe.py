"""Run by test_bucket_isolation.py in file order; not collected on its own (examples/).

Each `test_N_writes_...` puts an object into the run's bucket through a client that is not the
harness's `s3_client` (the app's own, or one the test builds from what it was given); the
`test_N_...next_test...` after it must find the bucket empty. Then tests that cannot see the
bucket, whose listings examples/conftest.py counts (the last test is not one of them).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from realstack.config import RunTargets
from realstack.contract import S3Target
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from tests.harness.sample.attachments import own_s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def own_client(target: S3Target | None) -> S3Client:
    """A boto3 client of the test's own, as an app or a repository class would build it."""
    assert target is not None
    return own_s3_client(target)


async def put(target: S3Target | None, bucket: str | None, key: str) -> None:
    await asyncio.to_thread(own_client(target).put_object, Bucket=str(bucket), Key=key, Body=b"x")


async def keys(target: S3Target | None, bucket: str | None) -> list[str]:
    listed = await asyncio.to_thread(own_client(target).list_objects_v2, Bucket=str(bucket))
    return [o["Key"] for o in listed.get("Contents", [])]


async def test_1_writes_through_the_apps_own_client_and_a_client_of_the_tests_own(
    app: Any, run_targets: RunTargets
) -> None:
    # A plain ASGI transport (not the harness's asgi_client): the app serves requests the
    # harness does not count, and writes the attachment with its own boto3 client.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as own:
        note = (await own.post("/notes", json={"title": "probe"})).json()
        put = await own.put(f"/notes/{note['id']}/attachment", content=b"x")

    assert put.status_code == 204
    assert await keys(run_targets.s3, run_targets.bucket) == [f"notes/{note['id']}/attachment"]


async def test_1_the_next_test_finds_the_bucket_empty(run_targets: RunTargets) -> None:
    assert await keys(run_targets.s3, run_targets.bucket) == []


async def test_2_writes_after_the_harness_client_served_a_request(
    client: httpx.AsyncClient, run_targets: RunTargets
) -> None:
    assert (await client.get("/notes")).status_code == 200
    await put(run_targets.s3, run_targets.bucket, "after-a-request")
    assert await keys(run_targets.s3, run_targets.bucket) == ["after-a-request"]


async def test_2_the_next_test_finds_the_bucket_empty(run_targets: RunTargets) -> None:
    assert await keys(run_targets.s3, run_targets.bucket) == []


async def test_3_writes_knowing_only_the_bucket_name(s3_target: S3Target, s3_bucket: str) -> None:
    await put(s3_target, s3_bucket, "by-name")
    assert await keys(s3_target, s3_bucket) == ["by-name"]


async def test_3_the_next_test_finds_the_bucket_empty(s3_target: S3Target, s3_bucket: str) -> None:
    assert await keys(s3_target, s3_bucket) == []


async def test_4_writes_knowing_only_the_raw_targets(run_targets: RunTargets) -> None:
    await put(run_targets.s3, run_targets.bucket, "by-targets")
    assert await keys(run_targets.s3, run_targets.bucket) == ["by-targets"]


async def test_4_the_next_test_finds_the_bucket_empty(s3_target: S3Target, s3_bucket: str) -> None:
    assert await keys(s3_target, s3_bucket) == []


async def test_sees_the_bucket_and_writes_nothing(run_targets: RunTargets, s3_bucket: str) -> None:
    assert run_targets.bucket == s3_bucket  # the adapter's targets name the run's own bucket


async def test_uses_only_the_database(db_session: AsyncSession) -> None:
    assert await db_session.scalar(text("SELECT 1")) == 1


async def test_uses_only_the_engine(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT 1")) == 1


def test_uses_no_service(request: pytest.FixtureRequest) -> None:
    """No after-test check was put in its fixtures: nothing of the harness runs around it."""
    assert {"_after_db_test", "_after_s3_test"}.isdisjoint(request.fixturenames)


async def test_last_finds_the_bucket_empty_before_the_session_ends(
    s3_target: S3Target, s3_bucket: str
) -> None:
    """Last: its teardown also ends the session, whose listings (the bucket's deletion) it
    takes, so no test above is charged with them."""
    assert await keys(s3_target, s3_bucket) == []
