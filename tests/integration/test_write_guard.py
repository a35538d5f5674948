"""A write's token is checked, and a JSON body bounded, before any of the body is read: an
unauthenticated or oversized body is refused without the service buffering it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from realstack import asgi_client

import api.deps
import api.write_guard
from api.auth import owner_for_token
from api.write_guard import MAX_JSON_BODY_BYTES
from tests.helpers import create_document

CHUNK = b" " * (1024 * 1024)
CHUNKS = 200  # 200 MiB, if anyone read it all


class Sent:
    """A request body that counts what was taken from it."""

    def __init__(self, first: bytes = b"") -> None:
        self.first = first
        self.chunks = 0

    async def body(self) -> AsyncIterator[bytes]:
        if self.first:
            yield self.first
        for _ in range(CHUNKS):
            self.chunks += 1
            yield CHUNK


@pytest.mark.parametrize(
    "authorization", [None, "Bearer not-a-known-token-at-all", "Basic YWxpY2U6eA=="]
)
async def test_an_unauthenticated_write_gets_401_before_its_body_is_read(
    app: FastAPI, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    sent = Sent(b'{"filename": "')
    anonymous = asgi_client(app)

    response = await anonymous.patch(
        "/documents/00000000-0000-0000-0000-000000000000", content=sent.body(), headers=headers
    )

    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert sent.chunks <= 1  # not the 200 MiB: at most what the transport pulled up front


async def test_a_json_body_declared_larger_than_the_limit_gets_413_unread(
    authed_client: httpx.AsyncClient,
) -> None:
    created = await create_document(authed_client)
    sent = Sent()

    response = await authed_client.patch(
        f"/documents/{created['id']}",
        content=sent.body(),
        headers={
            "If-Match": "1",
            "Content-Type": "application/json",
            "Content-Length": str(CHUNKS * len(CHUNK)),
        },
    )

    assert response.status_code == 413, response.text
    assert str(MAX_JSON_BODY_BYTES) in response.json()["detail"]
    assert sent.chunks <= 1


async def test_a_json_body_that_grows_past_the_limit_gets_413_when_it_does(
    authed_client: httpx.AsyncClient,
) -> None:
    created = await create_document(authed_client)
    sent = Sent(b'{"filename": "')  # chunked: no Content-Length to go by

    response = await authed_client.patch(
        f"/documents/{created['id']}",
        content=sent.body(),
        headers={"If-Match": "1", "Content-Type": "application/json"},
    )

    assert response.status_code == 413, response.text
    assert sent.chunks <= 2  # stopped at the first chunk past the limit
    unchanged = await authed_client.get(f"/documents/{created['id']}")
    assert unchanged.json()["version"] == 1


async def test_reads_stay_public_and_a_small_json_write_passes(
    client: httpx.AsyncClient, authed_client: httpx.AsyncClient
) -> None:
    created = await create_document(authed_client)

    read = await client.get(f"/documents/{created['id']}")
    renamed = await authed_client.patch(
        f"/documents/{created['id']}", json={"filename": "ok.txt"}, headers={"If-Match": "1"}
    )

    assert read.status_code == 200
    assert renamed.status_code == 200, renamed.text


async def test_a_writes_token_is_compared_once_not_again_by_the_route(
    authed_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WriteGuard finds the owner before the body is read; the route's require_owner takes it
    from the request's state instead of comparing the token with every one again."""
    compared: list[str] = []

    def counted(tokens: Mapping[str, SecretStr], presented: str) -> str | None:
        compared.append(presented)
        return owner_for_token(tokens, presented)

    monkeypatch.setattr(api.write_guard, "owner_for_token", counted)
    monkeypatch.setattr(api.deps, "owner_for_token", counted)

    created = await create_document(authed_client)

    assert created["id"]
    assert len(compared) == 1
