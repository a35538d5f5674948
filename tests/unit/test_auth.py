"""Writes need `Authorization: Bearer <token>`; tokens map to owners, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import SecretStr

from api import Settings
from api.auth import owner_for_token
from api.deps import require_owner

ALICE, BOB = "alice-token-0123456", "bob-token-0123456789"  # 16+ chars, as start-up requires
TOKENS = {"alice": ALICE, "bob": BOB}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.settings = Settings(
        database_url="postgresql+asyncpg://u@localhost/db",
        s3_access_key="a",
        s3_secret_key="b",
        s3_bucket="docstore",
        api_tokens=TOKENS,
    )

    @app.get("/whoami")
    async def whoami(owner: Annotated[str, Depends(require_owner)]) -> dict[str, str]:
        return {"owner": owner}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ALICE},
        {"Authorization": "Basic YWxpY2U6YWxpY2UtdG9rZW4="},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-known-token"},
    ],
    ids=["missing", "no-scheme", "basic-scheme", "empty-bearer", "unknown-token"],
)
async def test_requests_without_a_known_bearer_token_get_401_with_www_authenticate(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/whoami", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)


async def test_a_known_token_authenticates_as_its_owner(client: httpx.AsyncClient) -> None:
    response = await client.get("/whoami", headers={"Authorization": f"Bearer {BOB}"})

    assert response.status_code == 200
    assert response.json() == {"owner": "bob"}


async def test_the_bearer_scheme_name_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.get("/whoami", headers={"Authorization": f"bearer {ALICE}"})

    assert response.json() == {"owner": "alice"}


def secret_tokens() -> dict[str, SecretStr]:
    return {owner: SecretStr(token) for owner, token in TOKENS.items()}


def test_owner_for_token_returns_none_for_a_prefix_of_a_real_token() -> None:
    assert owner_for_token(secret_tokens(), ALICE[:9]) is None


def test_owner_for_token_handles_non_ascii_input() -> None:
    assert owner_for_token(secret_tokens(), "alice-tökén") is None


def test_every_token_is_compared_with_compare_digest_even_after_a_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real_compare: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    owner = owner_for_token(secret_tokens(), ALICE)

    assert owner == "alice"
    assert sorted(a for a, _ in calls) == sorted([ALICE.encode(), BOB.encode()])
