"""A small run of the load (tests/load_client.py, what bench/load.py runs large): concurrent
uploads and downloads through a real uvicorn.

It uses the run's PostgreSQL and S3, but its own stamped, migrated schema and its own bucket
(the harness's sandbox creates and drops them), because uvicorn commits for real and the run's
schema belongs to the other tests' rolled-back transactions.
"""

from __future__ import annotations

import secrets

from realstack import HarnessConfig, sandbox

from tests.app_adapter import environment_of, settings_for
from tests.load_client import OWNER, run_load, serve, verify

CLIENTS = 10
SIZE_BYTES = 64 * 1024


async def test_concurrent_uploads_and_downloads_through_uvicorn_all_match_and_agree(
    harness_config: HarnessConfig,
) -> None:
    token = secrets.token_urlsafe(24)
    async with sandbox(harness_config, "load") as run:
        settings = settings_for(run, tokens={OWNER: token}, max_upload_bytes=SIZE_BYTES)

        async with serve(environment_of(settings)) as served:
            report = await run_load(
                served.base_url, token, clients=CLIENTS, size_bytes=SIZE_BYTES, timeout_s=60
            )
        await verify(report, settings)

    assert report.errors == [], report.table()
    assert len(report.ids) == len(set(report.ids)) == CLIENTS
    assert report.requests == 2 * CLIENTS
    assert report.rows == report.objects == CLIENTS, report.table()
    assert report.ok
