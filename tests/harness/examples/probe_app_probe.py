"""The probe app (probe_app/) under its own adapter, run by integration/test_probe_app.py in a
nested run: lifespan state in requests, the adapter's overrides, a sessionmaker dependency."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
from realstack import RunTargets
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.harness.probe_app.app import GREETING, LIFESPAN_STARTS, BlobStore, current_user
from tests.harness.sample.models import Note
from tests.harness.sample.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


async def count_notes(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Note)) or 0)


async def test_a_route_reads_the_lifespans_state(client: httpx.AsyncClient) -> None:
    response = await client.get("/greeting")

    assert response.json() == {"greeting": GREETING, "started": LIFESPAN_STARTS[-1]}


async def test_each_request_gets_a_shallow_copy_of_the_state(client: httpx.AsyncClient) -> None:
    first = (await client.post("/visits")).json()
    second = (await client.post("/visits")).json()

    assert second["visits"] == first["visits"] + 1  # the lifespan's list: one object
    assert first["scratch"] is None  # what a request sets stays in its own copy
    assert second["scratch"] is None


async def test_a_test_overrides_a_dependency_for_itself(
    app: Any, client: httpx.AsyncClient
) -> None:
    app.dependency_overrides[current_user] = lambda: "alice"

    assert (await client.get("/whoami")).json() == {"user": "alice"}


async def test_the_adapters_override_is_back_after_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/whoami")

    assert response.status_code == 200, response.text
    assert response.json() == {"user": "probe-user"}


async def test_a_sessionmaker_dependency_writes_in_the_tests_transaction(
    client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    created = await client.post("/notes", json={"title": "through a sessionmaker"})

    assert created.status_code == 201, created.text
    assert await count_notes(db_session) == 1
    assert (await client.get("/notes")).json() == ["through a sessionmaker"]


async def test_its_writes_are_gone_in_the_next_test(
    client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    assert (await client.get("/notes")).json() == []
    assert await count_notes(db_session) == 0


async def test_gathered_requests_take_turns_on_the_tests_sessionmaker(
    client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    posts = [client.post("/notes", json={"title": f"n{i}"}) for i in range(5)]
    reads = [client.get("/notes") for _ in range(5)]

    responses = await asyncio.gather(*posts, *reads)

    assert [r.status_code for r in responses] == [201] * 5 + [200] * 5
    assert await count_notes(db_session) == 5


async def test_the_tests_sessionmaker_shares_the_apps_transaction(
    client: httpx.AsyncClient, db_sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with db_sessionmaker.begin() as session:
        session.add(Note(title="from the test's sessionmaker", body=""))

    assert (await client.get("/notes")).json() == ["from the test's sessionmaker"]


async def test_the_repository_writes_with_its_own_client(
    client: httpx.AsyncClient, s3_client: S3Client, s3_bucket: str
) -> None:
    response = await client.put("/blobs/a-key", content=b"bytes")

    assert response.status_code == 204, response.text
    assert s3_client.get_object(Bucket=s3_bucket, Key="a-key")["Body"].read() == b"bytes"


async def test_a_repository_writes_with_its_own_client_and_no_request(
    run_targets: RunTargets,
) -> None:
    """No request served and no s3_client: only the bucket's emptiness check can see this."""
    settings = Settings.from_targets(run_targets)
    assert settings.s3 is not None
    store = BlobStore(settings.s3)
    await store.put("written-behind-the-harness", b"bytes")
    listed = await asyncio.to_thread(store.client.list_objects_v2, Bucket=store.bucket)
    assert [o["Key"] for o in listed.get("Contents", [])] == ["written-behind-the-harness"]


async def test_the_bucket_is_empty_when_the_next_test_starts(
    s3_client: S3Client, s3_bucket: str
) -> None:
    listed = s3_client.list_objects_v2(Bucket=s3_bucket)
    assert listed["KeyCount"] == 0, [o["Key"] for o in listed.get("Contents", [])]


async def test_the_apps_lifespan_ran_once_for_the_whole_session(
    client: httpx.AsyncClient,
) -> None:
    started = (await client.get("/greeting")).json()["started"]

    assert [started] == LIFESPAN_STARTS
