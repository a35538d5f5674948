"""PATCH with optimistic concurrency (If-Match) and DELETE of row plus object, owner only."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import delete, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from api.models import Document, PendingObjectDeletion, document_tags
from tests.helpers import count_rows, create_document, object_keys, patch_document

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.mark.parametrize("if_match", ["1", '"1"'])
async def test_patch_with_the_current_version_updates_and_bumps_version(
    authed_client: httpx.AsyncClient, if_match: str
) -> None:
    created = await create_document(authed_client, tags="draft")

    response = await authed_client.patch(
        f"/documents/{created['id']}",
        json={"filename": "final.txt", "tags": ["Done", "reviewed"]},
        headers={"If-Match": if_match},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 2
    assert body["filename"] == "final.txt"
    assert body["tags"] == ["done", "reviewed"]
    assert body["updated_at"] > str(created["updated_at"])
    assert body["created_at"] == created["created_at"]
    assert response.headers["etag"] == '"2"'


async def test_patch_with_only_tags_keeps_the_filename(authed_client: httpx.AsyncClient) -> None:
    created = await create_document(authed_client, tags="draft")

    response = await authed_client.patch(
        f"/documents/{created['id']}", json={"tags": []}, headers={"If-Match": "1"}
    )

    assert response.json()["tags"] == []
    assert response.json()["filename"] == created["filename"]


async def test_patch_with_a_stale_version_gets_412_and_changes_nothing(
    authed_client: httpx.AsyncClient,
) -> None:
    created = await create_document(authed_client)
    first = await patch_document(authed_client, created["id"], {"filename": "one.txt"})
    assert first.status_code == 200

    stale = await patch_document(authed_client, created["id"], {"filename": "two.txt"})

    assert stale.status_code == 412
    current = (await authed_client.get(f"/documents/{created['id']}")).json()
    assert current["filename"] == "one.txt"
    assert current["version"] == 2


async def test_patch_without_if_match_gets_428(authed_client: httpx.AsyncClient) -> None:
    created = await create_document(authed_client)

    response = await authed_client.patch(f"/documents/{created['id']}", json={"filename": "x"})

    assert response.status_code == 428


async def test_patch_by_another_owner_gets_403(
    authed_client: httpx.AsyncClient, other_client: httpx.AsyncClient
) -> None:
    created = await create_document(authed_client)

    response = await other_client.patch(
        f"/documents/{created['id']}", json={"filename": "mine.txt"}, headers={"If-Match": "1"}
    )

    assert response.status_code == 403


async def test_patch_of_an_unknown_document_gets_404(authed_client: httpx.AsyncClient) -> None:
    response = await authed_client.patch(
        f"/documents/{uuid.uuid4()}", json={"filename": "x"}, headers={"If-Match": "1"}
    )

    assert response.status_code == 404


@pytest.mark.parametrize(
    "body",
    [{}, {"filename": ""}, {"tags": ["bad tag"]}, {"owner": "bob"}, {"tags": "a,b"}],
    ids=["empty", "empty-filename", "bad-tag", "unknown-field", "tags-not-a-list"],
)
async def test_patch_with_an_invalid_body_gets_422(
    authed_client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    created = await create_document(authed_client)

    response = await authed_client.patch(
        f"/documents/{created['id']}", json=body, headers={"If-Match": "1"}
    )

    assert response.status_code == 422


async def test_patch_without_a_token_gets_401(
    authed_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    created = await create_document(authed_client)

    response = await client.patch(
        f"/documents/{created['id']}", json={"filename": "x"}, headers={"If-Match": "1"}
    )

    assert response.status_code == 401


async def test_delete_removes_row_object_and_leaves_no_outbox_entry(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
) -> None:
    created = await create_document(authed_client)

    response = await authed_client.delete(f"/documents/{created['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert (await authed_client.get(f"/documents/{created['id']}")).status_code == 404
    assert await count_rows(db_session) == 0
    assert await count_rows(db_session, PendingObjectDeletion) == 0
    assert object_keys(s3_client, s3_bucket) == []


async def test_delete_by_another_owner_gets_403_and_keeps_everything(
    authed_client: httpx.AsyncClient,
    other_client: httpx.AsyncClient,
    s3_client: S3Client,
    s3_bucket: str,
) -> None:
    created = await create_document(authed_client)

    response = await other_client.delete(f"/documents/{created['id']}")

    assert response.status_code == 403
    assert (await authed_client.get(f"/documents/{created['id']}")).status_code == 200
    assert object_keys(s3_client, s3_bucket) == [f"documents/{created['id']}"]


async def test_delete_without_a_token_gets_401(
    authed_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    created = await create_document(authed_client)

    response = await client.delete(f"/documents/{created['id']}")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_delete_of_an_unknown_document_gets_404(authed_client: httpx.AsyncClient) -> None:
    assert (await authed_client.delete(f"/documents/{uuid.uuid4()}")).status_code == 404


@pytest.mark.real_commits
async def test_a_delete_landing_right_after_a_patch_commits_never_turns_it_into_a_500(
    authed_client: httpx.AsyncClient, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    created = await create_document(authed_client)
    document_id = uuid.UUID(created["id"])

    async def delete_the_row() -> None:  # what a racing DELETE commits, on a connection of its own
        async with engine.begin() as conn:
            await conn.execute(
                delete(document_tags).where(document_tags.c.document_id == document_id)
            )
            await conn.execute(delete(Document).where(Document.id == document_id))

    raced: list[Session] = []

    def right_after_the_commit(session: Session) -> None:
        if not raced:  # the PATCH's commit; then nothing more
            raced.append(session)
            await_only(delete_the_row())  # between the commit and whatever follows it

    event.listen(Session, "after_commit", right_after_the_commit)
    try:
        response = await authed_client.patch(
            f"/documents/{created['id']}", json={"filename": "raced.txt"}, headers={"If-Match": "1"}
        )
    finally:
        event.remove(Session, "after_commit", right_after_the_commit)

    assert raced  # the DELETE did land right after the PATCH's commit

    assert response.status_code == 200, response.text  # the write committed: it says so
    assert response.json()["filename"] == "raced.txt"
    assert response.json()["version"] == 2
    assert (await authed_client.get(f"/documents/{created['id']}")).status_code == 404
    assert "database error" not in caplog.text
