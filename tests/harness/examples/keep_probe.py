"""Run by test_safety.py with TEST_KEEP_ON_FAILURE=1; not collected on its own (examples/).

One test passes, one fails: the run must keep its database and bucket, stamped as kept.
"""

from __future__ import annotations

import httpx


async def test_1_passes(client: httpx.AsyncClient, s3_bucket: str) -> None:
    created = await client.post("/notes", json={"title": "kept run"})
    assert created.status_code == 201


async def test_2_fails_on_purpose(client: httpx.AsyncClient) -> None:
    assert (await client.get("/notes")).json() == ["a failure, on purpose"]
