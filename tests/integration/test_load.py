"""A small run of bench/load.py: concurrent uploads and downloads through a real uvicorn.

It uses the run's PostgreSQL and S3, but its own stamped schema and its own bucket (the
harness's janitors create, migrate and drop them), because uvicorn commits for real and the
run's schema belongs to the other tests' rolled-back transactions.
"""

from __future__ import annotations

import os
import secrets

from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from api import Settings
from api.db import create_engine_for
from api.storage import make_s3_client
from bench.load import OWNER, run_load, serve, verify
from tests.harness import contract
from tests.harness.janitor import BucketJanitor, RunNames, SchemaJanitor, migrate

CLIENTS = 10
SIZE_BYTES = 64 * 1024


async def test_concurrent_uploads_and_downloads_through_uvicorn_all_match_and_agree(
    settings: Settings, database_url: str
) -> None:
    names = RunNames(os.environ[contract.RUN_ID_VARIABLE], "load")
    token = secrets.token_urlsafe(24)
    admin = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with (
            SchemaJanitor(admin, names) as schema,
            BucketJanitor(make_s3_client(settings), names) as bucket,
        ):
            load_settings = settings.model_copy(
                update={"database_schema": schema.names.schema, "s3_bucket": bucket.bucket}
            )
            engine = create_engine_for(load_settings, poolclass=NullPool)
            async with engine.begin() as conn:
                await conn.run_sync(migrate)
            await engine.dispose()
            env = contract.service_environment(
                database_url,
                contract.resolve_s3(),
                schema=schema.names.schema,
                bucket=bucket.bucket,
                tokens={OWNER: token},
                max_upload_bytes=SIZE_BYTES,
            )

            async with serve(env) as served:
                report = await run_load(
                    served.base_url, token, clients=CLIENTS, size_bytes=SIZE_BYTES, timeout_s=60
                )
            await verify(report, env)

            assert report.errors == [], report.table()
            assert len(report.ids) == len(set(report.ids)) == CLIENTS
            assert report.requests == 2 * CLIENTS
            assert report.rows == report.objects == CLIENTS, report.table()
            assert report.ok
    finally:
        await admin.dispose()
