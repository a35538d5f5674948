"""GET /health reports the database and the bucket as reachable."""

from __future__ import annotations

import httpx


async def test_health_is_ok_when_database_and_bucket_are_reachable(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "storage": "ok"}


async def test_unknown_paths_answer_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/no-such-endpoint")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "detail" in response.json()
