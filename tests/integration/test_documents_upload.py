"""POST /documents: streaming upload to S3, limits, validation, auth; failures store nothing."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from api import Settings
from api.models import Document, Tag
from tests.helpers import count_rows, object_keys, upload

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


async def test_upload_then_download_returns_the_same_bytes(
    authed_client: httpx.AsyncClient, s3_client: S3Client, s3_bucket: str
) -> None:
    content = bytes(range(256)) * 1000
    expected_sha = hashlib.sha256(content).hexdigest()

    created = await upload(authed_client, content, "data.bin", "application/octet-stream")
    assert created.status_code == 201, created.text
    body = created.json()
    downloaded = await authed_client.get(f"/documents/{body['id']}/content")

    assert body["sha256"] == expected_sha
    assert body["size_bytes"] == len(content)
    assert body["owner"] == "alice"
    assert body["version"] == 1
    assert downloaded.status_code == 200
    assert hashlib.sha256(downloaded.content).hexdigest() == expected_sha
    assert downloaded.headers["etag"] == f'"{expected_sha}"'
    assert downloaded.headers["content-length"] == str(len(content))
    assert object_keys(s3_client, s3_bucket) == [f"documents/{body['id']}"]


async def test_upload_records_metadata_row_with_normalised_tags(
    authed_client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    created = await upload(authed_client, b"hello", tags=" Invoices , 2025")

    assert created.status_code == 201, created.text
    assert created.json()["tags"] == ["2025", "invoices"]
    row = await db_session.get(Document, created.json()["id"])
    assert row is not None
    assert row.storage_key == f"documents/{row.id}"
    assert await count_rows(db_session, Tag) == 2


async def test_repeated_tags_fields_are_all_kept(authed_client: httpx.AsyncClient) -> None:
    created = await authed_client.post(
        "/documents",
        files=[("file", ("a.txt", b"x", "text/plain"))],
        data={"tags": ["alpha", "beta"]},
    )

    assert created.status_code == 201, created.text
    assert created.json()["tags"] == ["alpha", "beta"]


async def test_path_traversal_in_the_filename_is_stripped_and_never_the_storage_key(
    authed_client: httpx.AsyncClient, s3_client: S3Client, s3_bucket: str
) -> None:
    created = await upload(authed_client, b"x", filename="../../etc/passwd")

    assert created.status_code == 201, created.text
    assert created.json()["filename"] == "passwd"
    assert object_keys(s3_client, s3_bucket) == [f"documents/{created.json()['id']}"]


async def test_download_content_disposition_carries_a_unicode_filename_safely(
    authed_client: httpx.AsyncClient,
) -> None:
    created = await upload(authed_client, b"x", filename="résumé 2025.pdf")

    response = await authed_client.get(f"/documents/{created.json()['id']}/content")

    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="resume 2025.pdf"')
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%202025.pdf" in disposition


async def test_a_file_over_the_limit_gets_413_and_leaves_no_row_and_no_object(
    authed_client: httpx.AsyncClient,
    settings: Settings,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
) -> None:
    content = b"x" * (settings.max_upload_bytes + 1)

    response = await upload(authed_client, content)

    assert response.status_code == 413
    assert "detail" in response.json()
    assert await count_rows(db_session) == 0
    assert object_keys(s3_client, s3_bucket) == []


async def test_a_declared_content_length_far_over_the_limit_is_refused_up_front(
    authed_client: httpx.AsyncClient,
    settings: Settings,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
) -> None:
    content = b"x" * (2 * settings.max_upload_bytes)

    response = await upload(authed_client, content)

    assert response.status_code == 413
    assert await count_rows(db_session) == 0
    assert object_keys(s3_client, s3_bucket) == []


async def test_a_file_exactly_at_the_limit_is_accepted(
    authed_client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await upload(authed_client, b"x" * settings.max_upload_bytes)

    assert response.status_code == 201, response.text
    assert response.json()["size_bytes"] == settings.max_upload_bytes


async def test_an_empty_file_gets_422_and_stores_nothing(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
) -> None:
    response = await upload(authed_client, b"")

    assert response.status_code == 422
    assert "empty" in response.json()["detail"]
    assert await count_rows(db_session) == 0
    assert object_keys(s3_client, s3_bucket) == []


async def test_invalid_tags_get_422_and_store_nothing(
    authed_client: httpx.AsyncClient,
    db_session: AsyncSession,
    s3_client: S3Client,
    s3_bucket: str,
) -> None:
    response = await upload(authed_client, b"data", tags="fine,not fine!")

    assert response.status_code == 422
    assert "invalid tag" in response.json()["detail"]
    assert await count_rows(db_session) == 0
    assert object_keys(s3_client, s3_bucket) == []


async def test_a_form_without_file_gets_422(authed_client: httpx.AsyncClient) -> None:
    response = await authed_client.post("/documents", files={"other": ("a.txt", b"x")})

    assert response.status_code == 422


async def test_a_json_body_gets_415(authed_client: httpx.AsyncClient) -> None:
    response = await authed_client.post("/documents", json={"file": "x"})

    assert response.status_code == 415


async def test_upload_without_a_token_gets_401(
    client: httpx.AsyncClient, db_session: AsyncSession
) -> None:
    response = await upload(client, b"data")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert await count_rows(db_session) == 0


async def test_upload_with_an_unknown_token_gets_401(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/documents",
        files={"file": ("a.txt", b"x")},
        headers={"Authorization": "Bearer not-a-real-token"},
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
