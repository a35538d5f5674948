"""The core fixtures on the sample app, in-process: the test's session is the app's session,
every test starts empty, real commits are cleaned, attachments land in the run's bucket."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from realstack import config
from realstack.adapter import AppAdapter
from realstack.buckets import object_keys
from realstack.migrations import drift
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from tests.harness.sample.attachments import attachment_key
from tests.harness.sample.models import Note

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MARKER = "only-in-this-test"


async def count_notes(session: AsyncSession, title: str | None = None) -> int:
    query = select(func.count()).select_from(Note)
    if title is not None:
        query = query.where(Note.title == title)
    return int(await session.scalar(query) or 0)


async def test_a_note_posted_through_the_app_is_in_the_tests_session(
    client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    created = await client.post("/notes", json={"title": MARKER, "body": "hello"})

    assert created.status_code == 201, created.text
    assert await count_notes(db_session, MARKER) == 1
    fetched = await client.get(f"/notes/{created.json()['id']}")
    assert fetched.json()["body"] == "hello"
    assert [n["title"] for n in (await client.get("/notes")).json()] == [MARKER]


async def test_is_gone_in_the_next_test(
    db_session: AsyncSession, client: httpx.AsyncClient
) -> None:
    assert await count_notes(db_session) == 0
    assert (await client.get("/notes")).json() == []


async def test_the_app_sees_the_tests_uncommitted_rows(
    db_session: AsyncSession, client: httpx.AsyncClient
) -> None:
    row = Note(title="flushed, not committed", body="")
    db_session.add(row)
    await db_session.flush()  # only the test's transaction can see it

    response = await client.get(f"/notes/{row.id}")

    assert response.status_code == 200
    assert response.json()["title"] == "flushed, not committed"


async def test_the_adapters_own_fixture_is_registered(
    note: Note, client: httpx.AsyncClient
) -> None:
    assert (await client.get(f"/notes/{note.id}")).json()["title"] == note.title


async def test_concurrent_requests_take_turns_on_the_tests_session(
    client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    responses = await asyncio.gather(
        *(client.post("/notes", json={"title": f"concurrent {i}"}) for i in range(5))
    )

    assert [r.status_code for r in responses] == [201] * 5
    assert await count_notes(db_session) == 5


async def test_an_unknown_note_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/notes/999999")).status_code == 404
    assert (await client.put("/notes/999999/attachment", content=b"x")).status_code == 404


@pytest.mark.real_commits
async def test_real_commits_through_the_app_reach_a_second_connection(
    client: httpx.AsyncClient, db_session: AsyncSession, run_database_url: str
) -> None:
    created = await client.post("/notes", json={"title": "committed-for-real"})
    db_session.add(Note(title="committed-for-real", body="by the test"))
    await db_session.commit()

    second = create_async_engine(run_database_url)  # an engine of the test's own
    try:
        async with AsyncSession(second) as other:
            seen = await count_notes(other, "committed-for-real")
    finally:
        await second.dispose()

    assert created.status_code == 201
    assert seen == 2


async def test_real_commit_rows_are_removed_after_the_test(db_session: AsyncSession) -> None:
    assert await count_notes(db_session, "committed-for-real") == 0


async def test_an_attachment_lands_in_the_runs_bucket(
    client: httpx.AsyncClient, s3_client: S3Client, s3_bucket: str
) -> None:
    note_id = (await client.post("/notes", json={"title": "with a file"})).json()["id"]

    put = await client.put(
        f"/notes/{note_id}/attachment", content=b"\x00bytes", headers={"content-type": "x/y"}
    )
    got = await client.get(f"/notes/{note_id}/attachment")
    stored = await asyncio.to_thread(
        s3_client.get_object, Bucket=s3_bucket, Key=attachment_key(note_id)
    )

    assert put.status_code == 204
    assert (got.status_code, got.content, got.headers["content-type"]) == (200, b"\x00bytes", "x/y")
    assert stored["Body"].read() == b"\x00bytes"


async def test_the_bucket_is_empty_in_the_next_test(
    client: httpx.AsyncClient, s3_client: S3Client, s3_bucket: str
) -> None:
    assert await asyncio.to_thread(object_keys, s3_client, s3_bucket) == []
    assert (await client.get("/notes/1/attachment")).status_code == 404


async def test_a_test_of_s3_alone_leaves_its_objects_until_the_bucket_is_emptied_after_it(
    s3_client: S3Client, s3_bucket: str, request: pytest.FixtureRequest
) -> None:
    await asyncio.to_thread(s3_client.put_object, Bucket=s3_bucket, Key="s3-only", Body=b"x")

    assert request.fixturenames[0] == "_after_s3_test"  # no database work after it
    assert await asyncio.to_thread(object_keys, s3_client, s3_bucket) == ["s3-only"]


async def test_and_the_next_test_finds_the_bucket_empty(
    s3_client: S3Client, s3_bucket: str
) -> None:
    assert await asyncio.to_thread(object_keys, s3_client, s3_bucket) == []


def test_a_test_that_uses_neither_service_gets_no_after_test_work(
    request: pytest.FixtureRequest, harness_config: config.HarnessConfig
) -> None:
    assert not {"_after_db_test", "_after_s3_test"} & set(request.fixturenames)


@pytest.fixture
async def transaction_until_teardown(run_database_url: str) -> AsyncIterator[None]:
    """A fixture of a test's own that keeps a transaction open until its own teardown."""
    engine = create_async_engine(run_database_url)
    try:
        async with engine.connect() as conn, conn.begin():
            await conn.execute(select(1))
            yield
    finally:
        await engine.dispose()


async def test_a_fixture_closing_its_own_transaction_at_teardown_is_not_called_a_leak(
    transaction_until_teardown: None, db_session: AsyncSession, request: pytest.FixtureRequest
) -> None:
    # The after-test check is first in the fixtures, so it is torn down last: after this
    # test's own fixture has closed its transaction (else it would report a leak).
    assert request.fixturenames[0] == "_after_db_test"
    assert await count_notes(db_session) == 0


async def test_the_models_match_the_migrations(
    engine: AsyncEngine, app_adapter: AppAdapter, harness_config: config.HarnessConfig
) -> None:
    project = harness_config.project
    async with engine.connect() as conn:
        assert await conn.run_sync(drift, app_adapter.metadata, project) == []


def test_the_app_reads_the_guarded_database_url(harness_config: config.HarnessConfig) -> None:
    project = harness_config.project
    assert os.environ[project.app_database_url_variable] == harness_config.database_url


def test_the_targets_were_resolved_once_in_this_process(pytestconfig: pytest.Config) -> None:
    worker: Any = getattr(pytestconfig, "workerinput", None)
    assert config.resolutions == (0 if worker else 1)  # workers take the controller's
