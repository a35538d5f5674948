"""A stamped, migrated schema (and bucket) for a real app process outside the test's own
transaction: `make dev`, load tests, fault tests through uvicorn. Dropped at exit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from sqlalchemy.pool import NullPool

from .config import HarnessConfig, RunTargets
from .isolation import create_test_engine
from .janitor import run_store
from .migrations import migrate
from .stamps import RunNames


@asynccontextmanager
async def sandbox(
    config: HarnessConfig, worker: str, *, keep: bool = False
) -> AsyncIterator[RunTargets]:
    """Create, stamp and migrate a schema (and, with S3, a bucket) named for this run and
    `worker`; yield the targets an app needs; drop both at exit (unless `keep`)."""
    names = RunNames(config.project, config.run_id, worker)
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            run_store(config.database_url, names, config.per_run, keep=keep)
        )
        engine = create_test_engine(store.url, store.schema, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(lambda sync: migrate(config.project, sync))
        finally:
            await engine.dispose()
        bucket = None
        if config.s3 is not None:
            from .buckets import BucketJanitor, s3_client_for

            janitor = BucketJanitor(s3_client_for(config.s3), names, keep=keep)
            bucket = (await stack.enter_async_context(janitor)).bucket
        yield RunTargets(store.url, store.schema, config.s3, bucket)
