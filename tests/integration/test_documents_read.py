"""Reading documents: metadata by id, keyset pagination with filters, and ranged downloads."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.helpers import create_document


async def walk_pages(client: httpx.AsyncClient, **params: str | int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = dict(params) | ({"cursor": cursor} if cursor else {})
        response = await client.get("/documents", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def flatten(pages: list[list[str]]) -> list[str]:
    return [document_id for page in pages for document_id in page]


async def test_metadata_of_a_document_is_public(
    authed_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    document_id = (await create_document(authed_client, tags="a"))["id"]

    response = await client.get(f"/documents/{document_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == document_id
    assert body["tags"] == ["a"]
    assert set(body) == {
        "id",
        "owner",
        "filename",
        "content_type",
        "size_bytes",
        "sha256",
        "tags",
        "created_at",
        "updated_at",
        "version",
    }
    assert response.headers["etag"] == '"1"'


async def test_an_unknown_id_gets_404(client: httpx.AsyncClient) -> None:
    unknown = uuid.uuid4()

    assert (await client.get(f"/documents/{unknown}")).status_code == 404
    assert (await client.get(f"/documents/{unknown}/content")).status_code == 404


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"])
async def test_a_malformed_id_gets_422(client: httpx.AsyncClient, bad_id: str) -> None:
    response = await client.get(f"/documents/{bad_id}")

    assert response.status_code == 422
    assert "detail" in response.json()


async def test_pagination_walks_every_document_once_newest_first(
    authed_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    created = [(await create_document(authed_client, f"doc {n}".encode()))["id"] for n in range(7)]

    pages = await walk_pages(client, limit=3)

    assert [len(page) for page in pages] == [3, 3, 1]
    assert flatten(pages) == list(reversed(created))


async def test_a_page_size_equal_to_the_total_has_no_next_cursor(
    authed_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    for _ in range(3):
        await create_document(authed_client)

    response = await client.get("/documents", params={"limit": 3})

    assert len(response.json()["items"]) == 3
    assert response.json()["next_cursor"] is None


async def test_owner_and_tag_filters_narrow_the_listing(
    authed_client: httpx.AsyncClient, other_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    alice_red = (await create_document(authed_client, tags="red"))["id"]
    alice_blue = (await create_document(authed_client, tags="blue"))["id"]
    bob_red = (await create_document(other_client, tags="red,blue"))["id"]

    by_owner = await walk_pages(client, owner="alice", limit=1)
    by_tag = await walk_pages(client, tag="RED", limit=1)
    by_both = await walk_pages(client, owner="bob", tag="blue")

    assert sorted(flatten(by_owner)) == sorted([alice_red, alice_blue])
    assert sorted(flatten(by_tag)) == sorted([alice_red, bob_red])
    assert flatten(by_both) == [bob_red]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"cursor": "garbage!"},
        {"cursor": "eyJ2IjoxfQ"},
        {"tag": "not a tag"},
    ],
    ids=["limit-0", "limit-101", "limit-text", "cursor-garbage", "cursor-wrong-shape", "bad-tag"],
)
async def test_bad_limit_cursor_or_tag_gets_422(
    client: httpx.AsyncClient, params: dict[str, str | int]
) -> None:
    response = await client.get("/documents", params=params)

    assert response.status_code == 422
    assert "detail" in response.json()


async def test_a_range_request_gets_206_with_content_range(
    authed_client: httpx.AsyncClient,
) -> None:
    document_id = (await create_document(authed_client, b"0123456789"))["id"]

    response = await authed_client.get(
        f"/documents/{document_id}/content", headers={"Range": "bytes=2-5"}
    )

    assert response.status_code == 206
    assert response.content == b"2345"
    assert response.headers["content-range"] == "bytes 2-5/10"
    assert response.headers["content-length"] == "4"


async def test_a_suffix_range_returns_the_last_bytes(authed_client: httpx.AsyncClient) -> None:
    document_id = (await create_document(authed_client, b"0123456789"))["id"]

    response = await authed_client.get(
        f"/documents/{document_id}/content", headers={"Range": "bytes=-3"}
    )

    assert response.status_code == 206
    assert response.content == b"789"


async def test_a_range_past_the_end_gets_416(authed_client: httpx.AsyncClient) -> None:
    document_id = (await create_document(authed_client, b"0123456789"))["id"]

    response = await authed_client.get(
        f"/documents/{document_id}/content", headers={"Range": "bytes=10-20"}
    )

    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */10"
