"""Conditional requests and parameters, as RFC 9110 has them: If-Match with `*` and lists,
DELETE honouring If-Match, If-Range, HEAD on the download, and repeated query parameters."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.helpers import create_document, patch_document

CONTENT = b"0123456789abcdef"


@pytest.mark.parametrize("if_match", ["*", '"7", "1"', '"1", W/"1"', ' "1" '])
async def test_if_match_star_and_lists_match_the_current_version(
    authed_client: httpx.AsyncClient, if_match: str
) -> None:
    created = await create_document(authed_client)

    response = await patch_document(authed_client, created["id"], {"filename": "b.txt"}, if_match)

    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2


@pytest.mark.parametrize("if_match", ['W/"1"', '"2", "3"', "garbage"])
async def test_if_match_without_the_current_version_strongly_gets_412(
    authed_client: httpx.AsyncClient, if_match: str
) -> None:
    created = await create_document(authed_client)

    response = await patch_document(authed_client, created["id"], {"filename": "b.txt"}, if_match)

    assert response.status_code == 412, response.text


async def test_delete_with_a_stale_if_match_gets_412_and_keeps_the_document(
    authed_client: httpx.AsyncClient,
) -> None:
    created = await create_document(authed_client)
    renamed = await patch_document(authed_client, created["id"], {"filename": "b.txt"})
    assert renamed.status_code == 200

    stale = await authed_client.delete(f"/documents/{created['id']}", headers={"If-Match": "1"})
    kept = await authed_client.get(f"/documents/{created['id']}")
    current = await authed_client.delete(f"/documents/{created['id']}", headers={"If-Match": "2"})

    assert stale.status_code == 412, stale.text
    assert kept.status_code == 200
    assert current.status_code == 204


async def test_delete_without_if_match_stays_unconditional(
    authed_client: httpx.AsyncClient,
) -> None:
    created = await create_document(authed_client)

    response = await authed_client.delete(f"/documents/{created['id']}")

    assert response.status_code == 204


async def test_a_range_with_a_stale_if_range_gets_the_whole_body(
    authed_client: httpx.AsyncClient,
) -> None:
    created = await create_document(authed_client, CONTENT)
    url = f"/documents/{created['id']}/content"
    etag = f'"{hashlib.sha256(CONTENT).hexdigest()}"'

    stale = await authed_client.get(url, headers={"Range": "bytes=0-3", "If-Range": '"other"'})
    dated = await authed_client.get(
        url, headers={"Range": "bytes=0-3", "If-Range": "Sun, 06 Nov 1994 08:49:37 GMT"}
    )
    current = await authed_client.get(url, headers={"Range": "bytes=0-3", "If-Range": etag})

    assert (stale.status_code, stale.content) == (200, CONTENT)
    assert "content-range" not in stale.headers
    assert (dated.status_code, dated.content) == (200, CONTENT)
    assert (current.status_code, current.content) == (206, CONTENT[:4])


async def test_head_on_the_download_answers_what_get_would_without_a_body(
    authed_client: httpx.AsyncClient,
) -> None:
    created = await create_document(authed_client, CONTENT)
    url = f"/documents/{created['id']}/content"

    whole = await authed_client.head(url)
    part = await authed_client.head(url, headers={"Range": "bytes=2-5"})
    got = await authed_client.get(url)

    assert whole.status_code == 200
    assert whole.content == b""
    assert whole.headers["content-length"] == str(len(CONTENT))
    for header in ("etag", "content-type", "content-disposition", "accept-ranges"):
        assert whole.headers[header] == got.headers[header]
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 2-5/{len(CONTENT)}"
    assert part.headers["content-length"] == "4"
    missing = await authed_client.head("/documents/00000000-0000-0000-0000-000000000000/content")
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "query", ["tag=a&tag=b", "limit=1&limit=2", "owner=a&owner=a", "min_count=1&min_count=2"]
)
async def test_a_repeated_query_parameter_gets_422_naming_it(
    client: httpx.AsyncClient, query: str
) -> None:
    path = "/tags" if query.startswith("min_count") else "/documents"
    name = query.split("=", 1)[0]

    response = await client.get(f"{path}?{query}")

    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["query", name]
    assert "at most once" in problem["msg"]
