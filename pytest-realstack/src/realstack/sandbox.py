"""A stamped, migrated database (and bucket) for a real app process outside the test's own
transaction: `make dev`, load tests, fault tests through uvicorn. Dropped at exit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from sqlalchemy.pool import NullPool

from .adapter import load_adapter
from .config import HarnessConfig, RunTargets
from .engines import create_test_engine
from .janitor import run_store
from .migrations import prepare
from .stamps import RunNames
from .templates import run_database


@asynccontextmanager
async def sandbox(
    config: HarnessConfig, worker: str, *, keep: bool = False
) -> AsyncIterator[RunTargets]:
    """Create and stamp a migrated database (a clone of the project's template; or, where the
    role may not create databases, a migrated schema) and, with S3, a bucket, named for this run
    and `worker`; yield the targets an app needs; drop both at exit (unless `keep`)."""
    names = RunNames(config.project, config.run_id, worker)
    metadata = load_adapter(config.project).metadata
    async with AsyncExitStack() as stack:
        if config.per_run == "database":
            own = run_database(
                config.database_url,
                config.project,
                metadata,
                names,
                keep=keep,
                wait_s=config.services_timeout_s,
            )
        else:
            own = run_store(config.database_url, names, "schema", keep=keep)
        store = await stack.enter_async_context(own)
        if store.schema is not None:  # no template: migrate the run's own schema
            engine = create_test_engine(store.url, store.schema, poolclass=NullPool)
            try:
                async with engine.begin() as conn:
                    await conn.run_sync(lambda sync: prepare(sync, config.project, metadata))
            finally:
                await engine.dispose()
        bucket = None
        if config.s3 is not None:
            from .buckets import BucketJanitor, s3_client_for

            janitor = BucketJanitor(s3_client_for(config.s3), names, keep=keep)
            bucket = (await stack.enter_async_context(janitor)).bucket
        yield RunTargets(store.url, store.schema, config.s3, bucket)
