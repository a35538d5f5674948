"""The probe app with an adapter that replaces its lifespan, or opts out of it: run by
integration/test_probe_app.py, one nested run per adapter (-k picks the test)."""

from __future__ import annotations

import httpx
import pytest

from tests.harness.probe_app.app import LIFESPAN_STARTS

TEST_GREETING = "hello from the adapter's lifespan"


async def test_the_adapters_lifespan_runs_instead(client: httpx.AsyncClient) -> None:
    response = await client.get("/greeting")

    assert response.json() == {"greeting": TEST_GREETING, "started": "by the adapter"}
    assert LIFESPAN_STARTS == []


async def test_no_lifespan_runs(client: httpx.AsyncClient) -> None:
    assert (await client.get("/whoami")).json() == {"user": "probe-user"}
    with pytest.raises(AttributeError, match="greeting"):
        await client.get("/greeting")
    assert LIFESPAN_STARTS == []
